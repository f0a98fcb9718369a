"""master-combine: fold unit results from the results stream and store job results.

A slave's completion step stores a unit's partial in the job's partials hash and
announces it with a small entry on the results stream. Every combiner is a consumer in
one consumer group on that stream, so any number of them share the entries. Each
entry's effect (the unit marked folded) and its XACK happen in one Lua step: nothing is
lost if a combiner dies, nothing is counted twice if an entry is delivered twice, and an
entry for a unit whose partial is not stored (forged, or of an ended job) is ignored.
The entry that completes a job puts it in the combine-ready set; whoever combines it
stores the result and state ``done`` in one transaction. Jobs left in that set by a dead
combiner are combined by the next one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import redis

from rqcluster import codec, events, groups, jobdata, keys, liveness, store
from rqcluster.config import ClusterConfig
from rqcluster.jobs import end_job, get_record, release
from rqcluster.kinds import Kind, get_kind
from rqcluster.models import JobRecord, JobState
from rqcluster.scripts import FOLD_ENTRY

log = logging.getLogger("rqcluster.reduce")

BATCH = 64
# Entries a dead combiner had read but not acknowledged are taken over after this many
# heartbeat TTLs (a live combiner folds what it read within milliseconds).
CLAIM_IDLE_TTLS = 2
# A combiner holds a job's combine lease for this many heartbeat TTLs, renewed while it
# works; one that died while combining leaves the job to others when the lease runs out.
COMBINE_LEASE_TTLS = 3


def consumer_name(node: str) -> str:
    """This process's consumer name: the node plus host and pid (unique per process)."""
    return f"{node}@{socket.gethostname()}:{os.getpid()}"


def ensure_group(conn: redis.Redis) -> None:
    """Create the combiners' group on the results stream unless it exists."""
    groups.ensure_group(conn, keys.RESULTS_STREAM, keys.COMBINERS_GROUP)


class Reducer:
    """The master-combine loop, one ``step`` at a time."""

    def __init__(self, conn: redis.Redis, config: ClusterConfig, node: str) -> None:
        self.conn = conn
        self.config = config
        self.node = node
        self.consumer = consumer_name(node)
        self._fold_entry = conn.register_script(FOLD_ENTRY)
        ttl_ms = liveness.ttl_ms(config.options.heartbeat_ttl)
        self.reader = groups.GroupReader(conn, keys.RESULTS_STREAM, keys.COMBINERS_GROUP,
                                         self.consumer, CLAIM_IDLE_TTLS * ttl_ms, BATCH)
        self.lease_ms = COMBINE_LEASE_TTLS * ttl_ms

    def step(self, block_ms: int = 1000) -> int:
        """Handle up to one batch of stream entries; returns how many were handled."""
        entries = self.reader.take(block_ms)
        ready = self._fold(entries)
        for job_id in ready | self._leftover_ready():
            self.combine(job_id)
        return len(entries)

    def _fold(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> set[str]:
        """Fold a batch of entries in one pipelined round trip; returns the jobs that
        became ready to combine."""
        if not entries:
            return set()
        pipe = self.conn.pipeline(transaction=False)
        folds: list[tuple[int, bytes, str, str]] = []  # (reply index, entry, job, unit)
        for entry_id, fields in entries:
            job_id = fields.get(b"job", b"").decode(errors="replace")
            unit = fields.get(b"unit", b"").decode(errors="replace")
            if not job_id or not unit.isdigit():
                log.warning("ignoring malformed results entry %s: %r", entry_id, fields)
                pipe.xack(keys.RESULTS_STREAM, keys.COMBINERS_GROUP, entry_id)
                pipe.xdel(keys.RESULTS_STREAM, entry_id)
                continue
            folds.append((len(pipe), entry_id, job_id, unit))
            self._fold_entry(
                keys=[keys.job(job_id), keys.partials(job_id), keys.RESULTS_STREAM,
                      keys.COMBINE_READY, keys.COMBINER_STATS, keys.folded(job_id)],
                args=[keys.COMBINERS_GROUP, entry_id, job_id, self.consumer, unit],
                client=pipe)
        replies = pipe.execute()
        ready = set()
        for at, entry_id, job_id, unit in folds:
            if replies[at] in (-1, -2):
                why = ("not a running job's stored unit" if replies[at] == -1
                       else "a duplicate of a unit already folded")
                log.warning("ignored results entry %s: job %s unit %s is %s",
                            entry_id.decode(), job_id, unit, why)
                events.emit(self.conn, events.RESULT_IGNORED, job=job_id, unit=unit,
                            entry=entry_id.decode(), why=why)
            elif replies[at] == 1:
                ready.add(job_id)
        return ready

    def _leftover_ready(self) -> set[str]:
        return {j.decode() for j in self.conn.smembers(keys.COMBINE_READY)}

    def combine(self, job_id: str) -> bool:
        """Combine a job's partials and store its result; True if this call finished it."""
        try:
            record = get_record(self.conn, job_id)
        except Exception:
            self.conn.srem(keys.COMBINE_READY, job_id)
            return False
        if record.state is not JobState.RUNNING:
            self.conn.srem(keys.COMBINE_READY, job_id)
            return False
        lease = keys.combining(job_id)
        if not self.conn.set(lease, self.consumer, nx=True, px=self.lease_ms):
            return False  # another combiner is on it; its lease expires if it died
        done = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lease, done), daemon=True,
                                   name=f"lease-{job_id}")
        renewer.start()
        try:
            return self._combine(record)
        finally:
            done.set()
            renewer.join()
            self.conn.delete(lease)

    def _renew(self, lease: str, done: threading.Event) -> None:
        """Keep the combine lease while this combiner works on it."""
        while not done.wait(self.lease_ms / 3000):
            try:
                self.conn.pexpire(lease, self.lease_ms)
            except redis.RedisError as e:
                log.warning("cannot renew the combine lease %s: %s", lease, e)

    def _combine(self, record: JobRecord) -> bool:
        job_id = record.id
        ttl = self.config.options.result_ttl
        kind = get_kind(record.kind)
        if kind.stacked:
            return self._finish_stacked(record, kind, ttl)
        try:
            raw = self.conn.hgetall(keys.partials(job_id))
            if len(raw) != record.total:
                raise RuntimeError(f"{len(raw)} partials stored for {record.total} units")
            partials = [codec.decode(raw[k]) for k in sorted(raw, key=int)]
            result = kind.combine(record.params, partials, jobdata.JobInputs(self.conn, job_id))
            encoded = codec.encode(result)
        except Exception as e:
            log.exception("job %s: combine failed", job_id)
            end_job(self.conn, job_id, JobState.FAILED,
                    {"message": f"combine failed: {type(e).__name__}: {e}"}, ttl)
            return False
        finally:
            jobdata.forget(job_id)
        return self._finish(job_id, encoded, ttl)

    def _finish_stacked(self, record: JobRecord, kind: Kind, ttl: int) -> bool:
        """A stacked result: the partials already are its blocks; record its layout."""
        count = self.conn.hlen(keys.partials(record.id))
        if count != record.total:
            end_job(self.conn, record.id, JobState.FAILED,
                    {"message": f"combine failed: {count} partials for {record.total} units"},
                    ttl)
            return False
        dtype, shape = kind.result_layout(record.params)
        meta = {"type": "stack", "dtype": dtype.str, "shape": list(shape), "units": count}
        return self._finish(record.id, None, ttl, meta)

    def _finish(self, job_id: str, encoded: bytes | None, ttl: int,
                stack: dict[str, Any] | None = None) -> bool:
        job_key = keys.job(job_id)
        with self.conn.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key)
                if pipe.hget(job_key, "state") != JobState.RUNNING.value.encode():
                    pipe.unwatch()
                    self.conn.srem(keys.COMBINE_READY, job_id)
                    return False
                pipe.multi()
                if stack is not None:
                    pipe.set(keys.job_result(job_id), json.dumps(stack), ex=ttl)
                else:
                    assert encoded is not None
                    store.put_blob(pipe, keys.job_result(job_id), encoded, ttl=ttl)
                pipe.hset(job_key, mapping={"state": JobState.DONE.value,
                                            "finished": repr(time.time())})
                pipe.rpush(keys.ended(job_id), JobState.DONE.value)  # (kept for ttl, below)
                pipe.zrem(keys.UNFINISHED, job_id)
                release(self.conn, job_id, ttl, pipe=pipe, keep_partials=stack is not None)
                events.emit(pipe, events.JOB_DONE, job=job_id)
                pipe.execute()
            except redis.WatchError:
                return False
        log.info("job %s done", job_id)
        return True

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; survives Redis restarts (retries with backoff)."""
        ensure_group(self.conn)
        beat = liveness.RoleBeat(self.conn, "master-combine", self.node,
                                 self.config.options.heartbeat_ttl)
        while not stop.is_set():
            try:
                beat()
                self.step(block_ms=1000)
            except redis.ConnectionError as e:
                log.warning("lost Redis (%s); retrying", e)
                stop.wait(1.0)
            except redis.ResponseError as e:
                if "NOGROUP" in str(e):  # the stream was deleted (e.g. FLUSHALL)
                    ensure_group(self.conn)
                else:
                    raise
