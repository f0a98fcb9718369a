"""master-assign's coordinator of graph jobs: start them, place units as they become
ready, run their scheduler's hooks, finish them.

Readiness is decided where units are counted: the completion script of a unit releases
the units waiting for it and puts those with nothing left to wait for on the job's
ready list, then announces the completion on the schedule stream. The coordinator reads
that stream in a consumer group (so an announcement is handled once, even if a
master-assign dies: another takes it over) and, for each entry:

1. runs the job's scheduler hook, if it has one, on its saved state;
2. applies what the hook asked for (new units, kills, the end of the job) together with
   the scheduler's new state and the entry's acknowledgement, in one transaction
   (WATCHing the saved state, so two coordinators never both apply);
3. places the ready units on slave queues (another transaction, idempotent: the ready
   list is emptied by the same transaction that places its units);
4. finishes the job once it settled: every unit done and every announcement handled.

A pass every second (``sweep``) retries placement of units that found no live slave,
finishes jobs a dead coordinator left settled, and announces slaves that joined or died.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, cast

import redis

from rqcluster import (
    codec,
    envelope,
    events,
    groups,
    keys,
    liveness,
    membership,
    rqjobs,
    seeding,
    store,
)
from rqcluster.config import ClusterConfig
from rqcluster.errors import RQClusterError
from rqcluster.functions import pack_object, unpack_object
from rqcluster.graph import sinks
from rqcluster.jobdata import JobInputs
from rqcluster.jobs import drop_units, end_job, get_record, release
from rqcluster.kill import stop_units
from rqcluster.models import JobRecord, JobState, UnitRecord, text
from rqcluster.reaper import pick_targets
from rqcluster.reduce import consumer_name
from rqcluster.scheduler import Actions, Scheduler, is_unset
from rqcluster.scripts import ADD_UNITS, FINISH_GRAPH, HANDLED, KILL_UNITS
from rqcluster.secret import cluster_key
from rqcluster.signedrq import sign_unit

log = logging.getLogger("rqcluster.coordinate")

BATCH = 32
CLAIM_IDLE_TTLS = 2  # entries a dead coordinator read are taken over after 2 TTLs
NO_LIVE_SLAVE = "no live slave: ready units wait for a slave to start"
# A graph job's coordination hash outlives the job by at most this long if the job ends
# between a coordinator's read and its write (renewed on every write; deleted at the end).
STATE_TTL = 7 * 86400


class HookFailed(RQClusterError):
    """Raised when a scheduler hook raises, or asks for something impossible."""


def ensure_group(conn: redis.Redis) -> None:
    """Create the coordinators' group on the schedule stream unless it exists."""
    groups.ensure_group(conn, keys.SCHEDULE_STREAM, keys.SCHEDULERS_GROUP)


class Coordinator:
    """The coordinator loop of one master-assign, one ``step`` at a time."""

    def __init__(self, conn: redis.Redis, config: ClusterConfig, node: str) -> None:
        self.conn = conn
        self.config = config
        self.consumer = consumer_name(node)
        self._add = conn.register_script(ADD_UNITS)
        self._kill = conn.register_script(KILL_UNITS)
        self._finish = conn.register_script(FINISH_GRAPH)
        self._handled = conn.register_script(HANDLED)
        self._schedulers: dict[str, tuple[Scheduler, bytes]] = {}  # job -> (obj, digest)
        self.queues = rqjobs.Queues(conn, config.options)
        self.reader = groups.GroupReader(
            conn, keys.SCHEDULE_STREAM, keys.SCHEDULERS_GROUP, self.consumer,
            CLAIM_IDLE_TTLS * liveness.ttl_ms(config.options.heartbeat_ttl), BATCH)

    # -- starting a job ------------------------------------------------------------------

    def start(self, record: JobRecord, assigning: str) -> bool:
        """Start a submitted graph job: add its static units and whatever its scheduler's
        ``init`` starts, then place the ready ones. ``assigning`` is the list the job was
        taken onto (cleared by the same transaction)."""
        job_id = record.id
        inputs = JobInputs(self.conn, job_id)
        count = int(record.params.get("units", 0))
        static = inputs.items("units", 0, count) if count else []
        scheduler, actions = None, Actions()
        try:
            if record.params.get("scheduler"):
                scheduler = inputs.function("scheduler")()
                scheduler.job_id, scheduler.seed = job_id, self.seed(record)
                scheduler.next_unit = count
                actions = self._call(scheduler, "init", scheduler.seed)
            started = [(i, u["task"], tuple(u["args"]), tuple(u["after"]), u["stage"])
                       for i, u in enumerate(static)] + actions.started
            units = self._units(record, started, count + len(actions.started))
        except Exception as e:
            self._fail(record.id, "init", e)
            self.conn.lrem(assigning, 0, job_id)
            return False
        with self.conn.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.job(job_id))
                if pipe.hget(keys.job(job_id), "state") != JobState.SUBMITTED.value.encode():
                    pipe.unwatch()
                    self.conn.lrem(assigning, 0, job_id)
                    return False
                pipe.multi()
                pipe.hset(keys.job(job_id), mapping={
                    "state": JobState.RUNNING.value, "graph": 1, "total": 0, "remaining": 0,
                    "pending": 0, "retries": 0, "lost": 0, "moved": 0, "killed": 0,
                    "started": repr(time.time())})
                pipe.hdel(keys.job(job_id), "waiting")
                pipe.sadd(keys.GRAPHS, job_id)
                pipe.lrem(assigning, 0, job_id)
                self._queue_effects(pipe, record, units, actions, scheduler)
                events.emit(pipe, events.JOB_PLACED, job=job_id, units=len(units))
                pipe.execute()
            except redis.WatchError:  # its record changed meanwhile: read it again, decide
                try:
                    return self.start(get_record(self.conn, job_id), assigning)
                except RQClusterError:
                    self.conn.lrem(assigning, 0, job_id)
                    return False
        log.info("job %s: %s started with %d unit(s)", job_id, record.description,
                 len(units))
        self._after_effects(record, actions)
        return True

    def seed(self, record: JobRecord) -> int:
        return record.seed if record.seed is not None else seeding.fallback_seed(record.id)

    # -- the schedule stream ---------------------------------------------------------------

    def step(self, block_ms: int = 1000) -> int:
        """Handle up to one batch of schedule entries; returns how many. Completions of
        jobs without a scheduler are acknowledged in one pipeline, and each job touched
        gets its ready units placed (together, so they share RQ jobs) and its end checked
        once per batch, not once per entry."""
        entries = self.reader.take(block_ms)
        records: dict[str, JobRecord | None] = {}
        plain: list[tuple[bytes | str, str]] = []
        for entry_id, raw in entries:
            fields = {text(k): text(v) for k, v in raw.items()}
            try:
                self._sort(entry_id, fields, records, plain)
            except redis.ConnectionError:
                raise
            except Exception:  # left pending: taken over and tried again later
                log.exception("cannot handle schedule entry %s: %r", text(entry_id), fields)
        if plain:
            pipe = self.conn.pipeline(transaction=False)
            for handled_id, job_id in plain:
                self._mark_handled(pipe, job_id, handled_id, done=True)
            pipe.execute()
        for job_id, record in records.items():
            if record is not None:
                self.place_ready(job_id)
                self.finish_if_settled(job_id)
        return len(entries)

    def _sort(self, entry_id: bytes, fields: dict[str, str],
              records: dict[str, JobRecord | None],
              plain: list[tuple[bytes | str, str]]) -> None:
        """Handle one entry of a batch, or (a completion of a job without a scheduler)
        add it to ``plain``, to be acknowledged with the batch."""
        if fields.get("event") != "unit-done" or "job" not in fields:
            self.handle(entry_id, fields)
            return
        job_id = fields["job"]
        if job_id not in records:
            records[job_id] = self._running(job_id)
        record = records[job_id]
        if record is None:
            self._ack(self.conn, entry_id)
        elif not fields.get("unit", "").isdigit():
            self.handle(entry_id, fields)  # malformed: logged and acknowledged
        elif record.params.get("scheduler"):
            self._apply_hook(record, entry_id, "unit_done", int(fields["unit"]), done=True)
        else:
            plain.append((entry_id, job_id))

    def _running(self, job_id: str) -> JobRecord | None:
        """The job's record if it runs; None (and its cached scheduler dropped) if not."""
        try:
            record = get_record(self.conn, job_id)
        except RQClusterError:
            record = None
        if record is None or record.state is not JobState.RUNNING:
            self._schedulers.pop(job_id, None)
            return None
        return record

    def _mark_handled(self, pipe: Any, job_id: str, entry_id: bytes | str,
                      done: bool) -> None:
        """Queue ``HANDLED`` for an entry and a job: counted once, acknowledged if done."""
        self._handled(keys=[keys.job(job_id), keys.scheduler_state(job_id),
                            keys.SCHEDULE_STREAM],
                      args=[keys.SCHEDULERS_GROUP, entry_id, int(done), int(done),
                            STATE_TTL], client=pipe)

    def handle(self, entry_id: bytes | str, fields: Mapping[str, str]) -> None:
        """Handle one schedule entry (a unit done, or a slave joined or died)."""
        event = fields.get("event", "")
        try:
            if event == "unit-done":
                self._unit_done(entry_id, fields["job"], int(fields["unit"]))
                return
            if event in ("slave-joined", "slave-died"):
                for job_id in self._scheduled_jobs():
                    self._slave_event(entry_id, job_id, event, fields.get("slave", ""))
        except (KeyError, ValueError):
            log.warning("ignoring malformed schedule entry %s: %r", text(entry_id), fields)
        self._ack(self.conn, entry_id)

    def _ack(self, pipe: Any, entry_id: bytes | str) -> None:
        pipe.xack(keys.SCHEDULE_STREAM, keys.SCHEDULERS_GROUP, entry_id)
        pipe.xdel(keys.SCHEDULE_STREAM, entry_id)

    def _unit_done(self, entry_id: bytes | str, job_id: str, unit: int) -> None:
        record = self._running(job_id)
        if record is None:
            self._ack(self.conn, entry_id)
            return
        self._apply_hook(record, entry_id, "unit_done", unit, done=True)
        self.place_ready(job_id)
        self.finish_if_settled(job_id)

    def _slave_event(self, entry_id: bytes | str, job_id: str, event: str,
                     slave: str) -> None:
        try:
            record = get_record(self.conn, job_id)
        except RQClusterError:
            return
        if record.state is JobState.RUNNING and record.params.get("scheduler"):
            hook = "slave_joined" if event == "slave-joined" else "slave_died"
            self._apply_hook(record, entry_id, hook, slave, done=False)
            self.place_ready(job_id)

    def _apply_hook(self, record: JobRecord, entry_id: bytes | str, hook: str, arg: Any,
                    done: bool) -> None:
        """Run one hook of the job's scheduler (if it has one) and apply its effects, the
        new state and (for a unit's announcement) the acknowledgement together."""
        while True:
            try:
                self._apply_once(record, entry_id, hook, arg, done)
                return
            except redis.WatchError:  # another coordinator saved the state: start over
                self._schedulers.pop(record.id, None)

    def _apply_once(self, record: JobRecord, entry_id: bytes | str, hook: str, arg: Any,
                    done: bool) -> None:
        job_id = record.id
        state_key = keys.scheduler_state(job_id)
        scheduler: Scheduler | None = None
        actions, units = Actions(), []
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.watch(state_key)
            sealed, seen = cast(list[bytes | None],
                                pipe.hmget(state_key, "state", f"seen:{text(entry_id)}"))
            if seen is not None:  # handled before (delivered twice)
                pipe.reset()
                if done:
                    self._ack(self.conn, entry_id)
                return
            if record.params.get("scheduler"):
                try:
                    scheduler = self._load(job_id, sealed)
                    if hook == "unit_done":
                        raw = cast(bytes, pipe.hget(keys.partials(job_id), str(arg)))
                        value = codec.decode(raw)
                        actions = self._call(scheduler, hook, arg, value)
                    else:
                        actions = self._call(scheduler, hook, arg)
                    units = self._units(record, actions.started, scheduler.next_unit)
                except Exception as e:
                    pipe.reset()
                    self._schedulers.pop(job_id, None)
                    self._fail(job_id, hook, e)
                    self._ack(self.conn, entry_id)
                    return
            pipe.multi()
            self._queue_effects(pipe, record, units, actions, scheduler)
            # a slave event is acknowledged once every job has seen it (``handle``)
            self._mark_handled(pipe, job_id, entry_id, done)
            pipe.execute()
        self._after_effects(record, actions)

    def _call(self, scheduler: Scheduler, hook: str, *args: Any) -> Actions:
        scheduler._begin()
        try:
            getattr(scheduler, hook)(*args)
        except BaseException:
            scheduler._end()
            raise
        return scheduler._end()

    def _load(self, job_id: str, sealed: bytes | None) -> Scheduler:
        """The job's scheduler as last saved (the cached object if it is that one)."""
        if sealed is None:
            raise HookFailed(f"job {job_id}: its scheduler's saved state is gone")
        digest = hashlib.sha256(sealed).digest()
        cached = self._schedulers.get(job_id)
        if cached is not None and cached[1] == digest:
            return cached[0]
        obj = unpack_object(envelope.open_(cluster_key(self.config), _state_context(job_id),
                                           sealed))
        if not isinstance(obj, Scheduler):
            raise HookFailed(f"job {job_id}: saved scheduler state is a {type(obj).__name__}")
        self._schedulers[job_id] = (obj, digest)
        return obj

    def _units(self, record: JobRecord,
               started: Iterable[tuple[int, str, tuple[Any, ...], tuple[int, ...], str]],
               limit: int) -> list[tuple[UnitRecord, list[int]]]:
        """Signed unit records (not placed yet) of units to add, with their prerequisites;
        HookFailed for a unit that names an unknown task or unit."""
        tasks = record.params.get("tasks", {})
        has_node = bool(record.params.get("node"))
        out = []
        for index, task, args, after, stage in started:
            if not (task in tasks or (has_node and not task.startswith("exec:"))):
                raise HookFailed(f"unit {index}: unknown task {task!r} (the job's tasks: "
                                 f"{', '.join(sorted(tasks)) or 'none'})")
            bad = [p for p in after if not 0 <= p < limit or p == index]
            if bad:
                raise HookFailed(f"unit {index}: waits for unit {bad[0]}, which does not "
                                 "exist (yet)")
            try:
                json.dumps(list(args))
            except (TypeError, ValueError):
                raise HookFailed(f"unit {index}: arguments must be JSON values") from None
            spec = {"task": task, "args": list(args), "after": list(after)}
            unit = sign_unit(record.id, record.kind, UnitRecord(index, "", spec, stage))
            out.append((unit, list(after)))
        return out

    def _queue_effects(self, pipe: Any, record: JobRecord,
                       units: list[tuple[UnitRecord, list[int]]], actions: Actions,
                       scheduler: Scheduler | None) -> None:
        """Queue on ``pipe`` (in MULTI) what a hook (or the job's start) asked for."""
        job_id = record.id
        graph_keys = [keys.job(job_id), keys.units(job_id), keys.partials(job_id),
                      keys.deps(job_id), keys.dependents(job_id), keys.ready(job_id)]
        if units:
            args: list[Any] = []
            for unit, after in units:
                args += [unit.index, unit.encode(), json.dumps(after)]
            self._add(keys=graph_keys, args=args, client=pipe)
        if actions.killed:
            self._kill(keys=[keys.job(job_id), keys.partials(job_id), keys.units(job_id),
                             keys.deps(job_id), keys.dependents(job_id), keys.ready(job_id),
                             keys.attempts(job_id)],
                       args=[codec.encode(None), keys.SLAVE_PREFIX, job_id,
                             *actions.killed], client=pipe)
        if scheduler is not None:
            sealed = envelope.seal(cluster_key(self.config), _state_context(job_id),
                                   pack_object(scheduler, "scheduler state"), compress=True)
            pipe.hset(keys.scheduler_state(job_id), "state", sealed)
            pipe.expire(keys.scheduler_state(job_id), STATE_TTL)
            self._schedulers[job_id] = (scheduler, hashlib.sha256(sealed).digest())
        if actions.finished:
            value = (self._sink_values(job_id, extra=units) if is_unset(actions.value)
                     else actions.value)
            store.put_blob(pipe, keys.job_result(job_id), codec.encode(value, "the result"),
                           ttl=self.config.options.result_ttl)
            self._finish(keys=self._finish_keys(job_id), args=[job_id, "0"], client=pipe)

    def _after_effects(self, record: JobRecord, actions: Actions) -> None:
        """What follows a committed transaction: stop killed units that were running,
        clean up a finished job, place ready units."""
        job_id = record.id
        if actions.killed:
            stop_units(self.conn, [keys.unit_member(job_id, u) for u in actions.killed])
        if actions.finished:
            self._finished(job_id)
        else:
            self.place_ready(job_id)

    # -- placing ready units --------------------------------------------------------------

    def place_ready(self, job_id: str) -> int:
        """Place the job's ready units on the live slaves whose queues drain first;
        returns how many (0 if none is ready, or no slave is live)."""
        with self.conn.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.ready(job_id))
                indexes = [int(i) for i in pipe.lrange(keys.ready(job_id), 0, -1)]
                if not indexes:
                    return 0
                shares = membership.live_shares(self.conn, self.config)
                if not shares:
                    pipe.unwatch()
                    self.conn.hset(keys.job(job_id), "waiting", NO_LIVE_SLAVE)
                    return 0
                names = sorted(shares)
                reads = self.conn.pipeline(transaction=False)
                for name in names:
                    reads.llen(keys.rq_queue_key(name))
                reads.hmget(keys.units(job_id), [str(i) for i in indexes])
                *lengths, raws = reads.execute()
                targets = pick_targets(len(indexes), shares,
                                       dict(zip(names, lengths, strict=True)))
                by_slave: dict[str, list[UnitRecord]] = {}
                for raw, target in zip(raws, targets, strict=True):
                    if raw is not None:  # (the job was released meanwhile)
                        by_slave.setdefault(target, []).append(
                            replace(UnitRecord.decode(raw), slave=target))
                self.queues.prepare(by_slave)
                pipe.multi()
                self.queues.place(pipe, job_id, by_slave, f"graph job {job_id}")
                pipe.delete(keys.ready(job_id))
                pipe.hdel(keys.job(job_id), "waiting")
                pipe.execute()
            except redis.WatchError:
                return self.place_ready(job_id)
        return len(indexes)

    # -- finishing -------------------------------------------------------------------------

    def finish_if_settled(self, job_id: str) -> bool:
        """Finish the job if every unit is done and every announcement handled: its
        result is the results of the units no other unit takes (one value, or a list
        in unit order)."""
        remaining, pending, state = self.conn.hmget(keys.job(job_id), "remaining", "pending",
                                                    "state")
        if state != JobState.RUNNING.value.encode() or int(remaining or 1) != 0 \
                or int(pending or 0) != 0:
            return False
        try:
            value = self._sink_values(job_id)
            encoded = codec.encode(value, "the result")
        except Exception as e:
            self._fail(job_id, "finish", e)
            return False
        pipe = self.conn.pipeline(transaction=True)
        store.put_blob(pipe, keys.job_result(job_id), encoded,
                       ttl=self.config.options.result_ttl)
        self._finish(keys=self._finish_keys(job_id), args=[job_id, "1"], client=pipe)
        if not pipe.execute()[-1]:
            return False
        self._finished(job_id)
        return True

    def _finish_keys(self, job_id: str) -> list[str]:
        return [keys.job(job_id), keys.ended(job_id), keys.UNFINISHED, keys.GRAPHS]

    def _sink_values(self, job_id: str,
                     extra: list[tuple[UnitRecord, list[int]]] | None = None) -> Any:
        """The results of the units no unit takes as input (killed units left out)."""
        afters = {int(i): UnitRecord.decode(raw).spec.get("after", [])
                  for i, raw in self.conn.hgetall(keys.units(job_id)).items()}
        for unit, after in extra or []:
            afters[unit.index] = after
        ends = sinks(afters)
        if not ends:
            return None
        killed = self.conn.hmget(keys.attempts(job_id), [f"{u}:killed" for u in ends])
        ends = [u for u, k in zip(ends, killed, strict=True) if k is None]
        raws = self.conn.hmget(keys.partials(job_id), [str(u) for u in ends]) if ends else []
        values = [codec.decode(cast(bytes, raw)) if raw is not None else None for raw in raws]
        return values[0] if len(values) == 1 else values

    def _finished(self, job_id: str) -> None:
        """A job this coordinator just finished: stop what still runs, free its inputs."""
        if self.conn.hget(keys.job(job_id), "state") != JobState.DONE.value.encode():
            return
        drop_units(self.conn, job_id)
        release(self.conn, job_id, self.config.options.result_ttl)
        self._schedulers.pop(job_id, None)
        events.emit(self.conn, events.JOB_DONE, job=job_id)
        log.info("job %s done", job_id)

    def _fail(self, job_id: str, hook: str, e: BaseException) -> None:
        message = f"scheduler {hook} failed: {type(e).__name__}: {e}" \
            if not isinstance(e, HookFailed) else f"{hook}: {e}"
        log.error("job %s: %s", job_id, message)
        end_job(self.conn, job_id, JobState.FAILED,
                {"message": message, "traceback": traceback.format_exc()},
                self.config.options.result_ttl)
        self._schedulers.pop(job_id, None)

    # -- the periodic pass ----------------------------------------------------------------

    def _scheduled_jobs(self) -> list[str]:
        return sorted(text(j) for j in self.conn.smembers(keys.GRAPHS))

    def sweep(self) -> None:
        """Place what waits for a slave, finish what a dead coordinator left settled,
        announce slaves that joined or died."""
        for job_id in self._scheduled_jobs():
            self.place_ready(job_id)
            self.finish_if_settled(job_id)
        self._announce_slaves()

    def _announce_slaves(self) -> None:
        live = set(membership.live_shares(self.conn, self.config))  # (draining ones: left)
        with self.conn.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.SCHEDULE_LIVE)
                known = {text(s) for s in pipe.smembers(keys.SCHEDULE_LIVE)}
                joined, died = sorted(live - known), sorted(known - live)
                if not joined and not died:
                    pipe.unwatch()
                    return
                pipe.multi()
                if joined:
                    pipe.sadd(keys.SCHEDULE_LIVE, *joined)
                if died:
                    pipe.srem(keys.SCHEDULE_LIVE, *died)
                if self.conn.scard(keys.GRAPHS):
                    for event, names in (("slave-joined", joined), ("slave-died", died)):
                        for name in names:
                            pipe.xadd(keys.SCHEDULE_STREAM, {"event": event, "slave": name})
                pipe.execute()
            except redis.WatchError:
                pass

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; survives Redis restarts."""
        ensure_group(self.conn)
        next_sweep = 0.0
        period = min(1.0, self.config.options.heartbeat_ttl / 4)
        while not stop.is_set():
            try:
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + period
                self.step(block_ms=int(period * 1000))
            except redis.ConnectionError as e:
                log.warning("lost Redis (%s); retrying", e)
                stop.wait(1.0)
            except redis.ResponseError as e:
                if "NOGROUP" in str(e):
                    ensure_group(self.conn)
                else:
                    raise


def _state_context(job_id: str) -> envelope.Context:
    return envelope.Context("scheduler-state", job_id, "", "graph")
