"""master-assign's reaper: units a slave lost are moved to live slaves.

RQ never moves a job off a dead worker's private queue, so rqcluster keeps its own
record of who holds what (``keys.slave_units``, ``keys.RUNNING``, the worker status keys
with their TTL) and, once per pass, finds three kinds of lost unit:

- every unit held by a slave whose heartbeat expired (killed, frozen, partitioned);
- a running unit whose worker's status key expired (the worker died; the slave may
  already be back under a new worker), or whose live worker says it runs something
  else (its completion was lost, e.g. with the last second of a Redis restart);
- a unit held by a live, idle slave with nothing queued (it vanished between RQ's
  dequeue and the unit's start, e.g. stranded in RQ's intermediate list by a worker that
  died there).

The last two are confirmed on a later pass before anything moves, so a heartbeat that
is merely late moves nothing. Moving is one Lua step per unit (``MOVE_UNIT``) that checks
the unit is still held and not done, so it happens once; the completion script counts a
unit once whoever finishes it. A unit that was running when its worker died
``max-attempts`` times fails its job with the slaves it took down. Time is Redis's TIME.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from redis.commands.core import Script

from rqcluster import events, keys, rqjobs
from rqcluster.config import ClusterConfig
from rqcluster.jobs import end_job, prune_index
from rqcluster.models import JobState, UnitRecord, text
from rqcluster.scripts import MOVE_UNIT

log = logging.getLogger("rqcluster.reaper")


@dataclass(frozen=True)
class Lost:
    """A unit to move: which, from which slave, why, and the worker running it if any."""

    member: str
    slave: str
    reason: str  # slave-silent | worker-died | batch-lost | completion-lost | not-delivered
    worker: str = ""

    @property
    def job_id(self) -> str:
        return self.member.rsplit(":", 1)[0]

    @property
    def index(self) -> int:
        return int(self.member.rsplit(":", 1)[1])

    @property
    def while_running(self) -> bool:
        return self.worker != ""


@dataclass(frozen=True)
class SlaveLoad:
    """What one pass reads about a configured slave."""

    alive: bool
    held: int  # units placed on it and not completed
    # RQ jobs waiting on its queue. Not those RQ has dequeued into its intermediate list:
    # a live worker starts them within milliseconds, and one that died in between leaves
    # them there for good, so a slave with nothing else to do is idle, not busy.
    queued: int


@dataclass
class Suspects:
    """Candidates seen on earlier passes: name -> Redis time first seen."""

    seen: dict[str, float] = field(default_factory=dict)

    def confirm(self, now: float, candidates: Iterable[str], after: float) -> set[str]:
        """Remember the candidates; return those seen for at least ``after`` seconds.
        Names that are no longer candidates are forgotten."""
        current = set(candidates)
        self.seen = {c: self.seen.get(c, now) for c in current}
        return {c for c, first in self.seen.items() if now - first >= after}


def running_lost(running: Mapping[str, dict[str, Any]],
                 workers: Mapping[str, dict[str, Any] | None]) -> tuple[list[Lost], list[Lost]]:
    """Running units whose worker is gone (certain; with the rest of their batch, which
    died with the worker's RQ job), and those whose live worker says it runs another unit
    (to confirm on a later pass)."""
    gone, mismatched = [], []
    for member, entry in running.items():
        status = workers.get(entry["worker"])
        if status is None:
            gone.append(Lost(member, entry["slave"], "worker-died", entry["worker"]))
            job_id = member.rsplit(":", 1)[0]
            gone += [Lost(keys.unit_member(job_id, i), entry["slave"], "batch-lost")
                     for i in entry.get("rest", ()) if keys.unit_member(job_id, i) not in running]
        elif status.get("unit") != member:
            mismatched.append(Lost(member, entry["slave"], "completion-lost", entry["worker"]))
    return gone, mismatched


def pick_targets(count: int, shares: Mapping[str, float],
                 queued: Mapping[str, int]) -> list[str]:
    """Where ``count`` units go: each to the live slave whose queue would then drain
    soonest (queue length over performance), so moved work spreads by speed."""
    load = {s: float(queued.get(s, 0)) for s in shares}
    out = []
    for _ in range(count):
        best = min(shares, key=lambda s: ((load[s] + 1) / shares[s], s))
        load[best] += 1
        out.append(best)
    return out


class Reaper:
    """One pass at a time (``sweep``); the master-assign loop calls it every second."""

    def __init__(self, conn: redis.Redis, config: ClusterConfig) -> None:
        self.conn = conn
        self.config = config
        self.ttl = config.options.heartbeat_ttl
        self._move: Script = conn.register_script(MOVE_UNIT)
        self._mismatched = Suspects()
        self._undelivered = Suspects()
        self._silent: set[str] = set()  # slaves already reported silent
        self.queues = rqjobs.Queues(conn, config.options)
        self._next_prune = 0.0
        self.avoid: set[str] = set()  # slaves being drained: never a target

    def sweep(self, now: float | None = None) -> int:
        """Find lost units and move them; returns how many moved. ``now`` (seconds)
        replaces Redis's TIME for confirming suspects (tests)."""
        redis_now, views, running = self._read()
        if redis_now >= self._next_prune:  # housekeeping, once a minute
            self._next_prune = redis_now + 60
            prune_index(self.conn, redis_now - self.config.options.result_ttl - 86400)
        now = redis_now if now is None else now
        lost: list[Lost] = []
        dead = [s for s, v in views.items() if not v.alive and v.held]
        for slave in dead:
            if slave not in self._silent:
                self._silent.add(slave)
                log.warning("slave %s went silent holding %d unit(s); moving them",
                            slave, views[slave].held)
                events.emit(self.conn, events.SLAVE_SILENT, slave=slave,
                            units=views[slave].held)
            lost += self._held_by(slave, running)
        self._silent &= {s for s, v in views.items() if not v.alive}
        taken = {x.member for x in lost}
        workers = self._workers({e["worker"] for m, e in running.items() if m not in taken})
        gone, mismatched = running_lost(
            {m: e for m, e in running.items() if m not in taken}, workers)
        lost += gone
        sure = self._mismatched.confirm(now, (x.member for x in mismatched), self.ttl / 2)
        lost += [x for x in mismatched if x.member in sure]
        lost += self._undelivered_units(now, views, running)
        lost = list({x.member: x for x in reversed(lost)}.values())[::-1]  # first wins
        if not lost:
            return 0
        shares = {s.name: s.performance for s in self.config.slaves
                  if s.name in views and views[s.name].alive and s.name not in self.avoid}
        if not shares:
            return 0  # nowhere to go; the job waits for a slave (status says so)
        moved = self._move_all(lost, shares, {s: v.queued for s, v in views.items()})
        for slave in dead:
            self._forget_queue(slave)
        return moved

    # -- reading ---------------------------------------------------------------------

    def _read(self) -> tuple[float, dict[str, SlaveLoad], dict[str, dict[str, Any]]]:
        names = [s.name for s in self.config.slaves]
        pipe = self.conn.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(keys.RUNNING)
        for name in names:
            pipe.exists(keys.heartbeat(name))
            pipe.scard(keys.slave_units(name))
            pipe.llen(keys.rq_queue_key(name))
        (seconds, micros), running_raw, *rest = pipe.execute()
        views = {}
        for i, name in enumerate(names):
            alive, held, queued = rest[3 * i: 3 * i + 3]
            views[name] = SlaveLoad(bool(alive), held, queued)
        running = {}
        for member, entry in running_raw.items():
            try:
                running[member.decode()] = json.loads(entry)
            except ValueError:
                log.warning("ignoring a corrupt running entry for %r", member)
        return seconds + micros / 1e6, views, running

    def _workers(self, names: set[str]) -> dict[str, dict[str, Any] | None]:
        ordered = sorted(names)
        pipe = self.conn.pipeline(transaction=False)
        for name in ordered:
            pipe.get(keys.worker(name))
        return {n: (json.loads(raw) if raw else None)
                for n, raw in zip(ordered, pipe.execute(), strict=True)}

    def _held_by(self, slave: str, running: Mapping[str, dict[str, Any]]) -> list[Lost]:
        members = sorted(text(m) for m in self.conn.smembers(keys.slave_units(slave)))
        return [Lost(m, slave, "slave-silent", running.get(m, {}).get("worker", ""))
                for m in members]

    def _undelivered_units(self, now: float, views: Mapping[str, SlaveLoad],
                           running: Mapping[str, dict[str, Any]]) -> list[Lost]:
        busy = {e["slave"] for e in running.values()}
        idle = [s for s, v in views.items()
                if v.alive and v.held and not v.queued and s not in busy]
        candidates: dict[str, str] = {}
        for slave in idle:
            for m in self.conn.smembers(keys.slave_units(slave)):
                candidates[text(m)] = slave
        sure = self._undelivered.confirm(now, candidates, self.ttl)
        return [Lost(m, candidates[m], "not-delivered") for m in sorted(sure)]

    # -- moving ------------------------------------------------------------------------

    def _move_all(self, lost: list[Lost], shares: Mapping[str, float],
                  queued: Mapping[str, int]) -> int:
        pipe = self.conn.pipeline(transaction=False)
        for x in lost:
            pipe.hget(keys.units(x.job_id), str(x.index))
        records = pipe.execute()
        targets = pick_targets(len(lost), shares, queued)
        moved = 0
        for x, raw, target in zip(lost, records, targets, strict=True):
            if raw is None:  # the job ended and was released meanwhile
                self.conn.srem(keys.slave_units(x.slave), x.member)
                continue
            record = UnitRecord.decode(raw)
            moved += self._move_one(x, record, target)
        return moved

    def _move_one(self, x: Lost, record: UnitRecord, target: str) -> int:
        job_id = x.job_id
        answer = self._move(
            keys=[keys.job(job_id), keys.partials(job_id), keys.units(job_id),
                  keys.attempts(job_id), keys.RUNNING, keys.slave_units(x.slave),
                  keys.slave_units(target), keys.SLAVE_STATS],
            args=[x.index, x.member, _with_slave(record, target).encode(), x.slave,
                  "1" if x.while_running else "0", self.config.options.max_attempts,
                  x.worker])
        if answer[0] == -1:
            self._give_up(x, json.loads(answer[1]))
            return 0
        if answer[0] != 1:
            return 0
        moves = int(answer[1])
        self.queues.requeue(target, job_id, x.index, "moved", moves)
        log.info("unit %d of job %s moved from %s to %s (%s)", x.index, job_id, x.slave,
                 target, x.reason)
        events.emit(self.conn, events.UNIT_MOVED, job=job_id, unit=x.index, slave=x.slave,
                    to=target, reason=x.reason)
        return 1

    def _give_up(self, x: Lost, lost_on: list[str]) -> None:
        tries = len(lost_on)
        message = (f"unit {x.index} was running when its worker died {tries} times (on "
                   f"{', '.join(lost_on)}); giving up after {tries} attempts "
                   "(options.max-attempts). Does the unit crash or exhaust its process?")
        if end_job(self.conn, x.job_id, JobState.FAILED,
                   {"unit": x.index, "slave": x.slave, "slaves": lost_on, "message": message},
                   self.config.options.result_ttl):
            log.error("job %s failed: %s", x.job_id, message)

    def _forget_queue(self, slave: str) -> None:
        """Drop a silent slave's RQ queue once everything it held has moved: the RQ jobs
        there would only be skipped if it came back."""
        queue = keys.rq_queue_key(slave)
        pipe = self.conn.pipeline(transaction=True)
        pipe.watch(keys.slave_units(slave), queue)
        if pipe.scard(keys.slave_units(slave)) or pipe.exists(keys.heartbeat(slave)):
            pipe.reset()
            return
        ids = pipe.lrange(queue, 0, -1) + pipe.lrange(f"{queue}:intermediate", 0, -1)
        pipe.multi()
        pipe.delete(queue, f"{queue}:intermediate",
                    *(f"rq:job:{text(i)}" for i in ids))
        try:
            pipe.execute()
        except redis.WatchError:
            pass


def _with_slave(record: UnitRecord, slave: str) -> UnitRecord:
    return replace(record, slave=slave)  # keeps the spec's signature (``sig``)
