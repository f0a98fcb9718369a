"""master-assign: take submitted jobs, split them into units, place units on slave queues.

A job is taken with BLMOVE onto this node's own ``assigning`` list, so a master-assign
killed mid-split finds it there on restart. Between jobs the loop runs the reaper
(``reaper.py``), which moves units that slaves lost to live slaves. Placement is one
MULTI/EXEC that writes every unit record, every RQ job on every slave queue and the job's
new state together: a job is placed wholly or not at all, and never twice (the
transaction WATCHes the job record).
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from rqcluster import adaptive, events, keys, liveness, membership, rqjobs
from rqcluster.config import ClusterConfig
from rqcluster.coordinate import Coordinator
from rqcluster.errors import RQClusterError
from rqcluster.jobs import end_job, get_record
from rqcluster.kinds import get_kind
from rqcluster.models import JobRecord, JobState, UnitRecord
from rqcluster.reaper import Reaper
from rqcluster.signedrq import sign_unit
from rqcluster.steal import Stealer

log = logging.getLogger("rqcluster.assign")

NO_LIVE_SLAVE = "no live slave: waiting for a slave to start"


class Assigner:
    """The master-assign loop, one ``step`` at a time."""

    def __init__(self, conn: redis.Redis, config: ClusterConfig, node: str) -> None:
        self.conn = conn
        self.config = config
        self.node = node
        self.queues = rqjobs.Queues(conn, config.options)
        self.starved = False  # the last job taken found no live slave and was put back
        self.coordinator = Coordinator(conn, config, node)

    def recover(self) -> int:
        """Place the jobs this node had taken when it last stopped; returns how many."""
        pending = [j.decode() for j in self.conn.lrange(keys.assigning(self.node), 0, -1)]
        for job_id in pending:
            self.assign(job_id)
        return len(pending)

    def step(self, timeout: float = 1.0) -> str | None:
        """Take one submitted job (waiting up to ``timeout`` s) and place it."""
        raw = self.conn.blmove(keys.SUBMITTED, keys.assigning(self.node), timeout,
                               "LEFT", "RIGHT")
        if raw is None:
            return None
        job_id = raw.decode()
        self.assign(job_id)
        return job_id

    def assign(self, job_id: str) -> bool:
        """Split and place one job; True if placed, False if skipped or put back."""
        mine = keys.assigning(self.node)
        try:
            record = get_record(self.conn, job_id)
        except RQClusterError:
            self.conn.lrem(mine, 0, job_id)  # expired or corrupt: nothing to place
            return False
        if record.state is not JobState.SUBMITTED:
            self.conn.lrem(mine, 0, job_id)
            return False
        if get_kind(record.kind).coordinated:  # placed unit by unit as they become ready
            return self.coordinator.start(record, mine)
        shares = membership.live_shares(self.conn, self.config)  # joined in, draining out
        self.starved = not shares
        if self.starved:
            self._put_back(record)
            return False
        try:
            units = get_kind(record.kind).split(record.params, shares,
                                                self.config.options.units_per_slave)
        except Exception as e:
            log.exception("cannot split job %s", job_id)
            end_job(self.conn, job_id, JobState.FAILED,
                    {"message": f"split failed: {type(e).__name__}: {e}"},
                    self.config.options.result_ttl)
            self.conn.lrem(mine, 0, job_id)
            return False
        return self._place(record, [sign_unit(record.id, record.kind,
                                              UnitRecord(u.index, u.slave, u.spec))
                                    for u in units])

    def _put_back(self, record: JobRecord) -> None:
        """Return the job to the head of the submitted list (order kept) and mark it and
        every job behind it as waiting for a slave, so `status` says so for each."""
        pipe = self.conn.pipeline(transaction=True)
        pipe.lrem(keys.assigning(self.node), 0, record.id)
        pipe.lpush(keys.SUBMITTED, record.id)
        pipe.execute()
        queued = [j.decode() for j in self.conn.lrange(keys.SUBMITTED, 0, -1)]
        pipe = self.conn.pipeline(transaction=False)
        for job_id in queued:
            pipe.hmget(keys.job(job_id), "state", "waiting")
        unmarked = [job_id for job_id, (state, mark) in zip(queued, pipe.execute(), strict=True)
                    if state is not None and mark is None]  # (state None: job expired)
        for job_id in unmarked:
            pipe.hset(keys.job(job_id), "waiting", NO_LIVE_SLAVE)
            log.warning("job %s: %s", job_id, NO_LIVE_SLAVE)
        pipe.execute()

    def _place(self, record: JobRecord, units: list[UnitRecord]) -> bool:
        by_slave: dict[str, list[UnitRecord]] = {}
        for u in units:
            by_slave.setdefault(u.slave, []).append(u)
        self.queues.prepare(by_slave)
        job_key = keys.job(record.id)
        with self.conn.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key)
                if pipe.hget(job_key, "state") != JobState.SUBMITTED.value.encode():
                    pipe.unwatch()
                    self.conn.lrem(keys.assigning(self.node), 0, record.id)
                    return False
                pipe.multi()
                self.queues.place(pipe, record.id, by_slave, f"{record.kind} job {record.id}")
                pipe.hset(job_key, mapping={"state": JobState.RUNNING.value,
                                            "total": len(units), "remaining": len(units),
                                            "retries": 0, "lost": 0, "moved": 0,
                                            "started": repr(time.time())})
                pipe.hdel(job_key, "waiting")
                pipe.lrem(keys.assigning(self.node), 0, record.id)
                events.emit(pipe, events.JOB_PLACED, job=record.id, units=len(units))
                pipe.execute()
            except redis.WatchError:
                return self.assign(record.id)  # cancelled meanwhile: re-read and decide
        log.info("job %s: %s placed as %d units (%s)", record.id, record.description,
                 len(units), ", ".join(f"{s}: {len(u)}" for s, u in by_slave.items()))
        return True

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; survives Redis restarts (retries with backoff)."""
        recovered = self.recover()
        if recovered:
            log.info("recovered %d job(s) taken before a restart", recovered)
        beat = liveness.RoleBeat(self.conn, "master-assign", self.node,
                                 self.config.options.heartbeat_ttl)
        reaper = Reaper(self.conn, self.config)
        balance = Balancer(self.conn, self.config, reaper)
        period = min(1.0, self.config.options.heartbeat_ttl / 4)
        next_sweep = 0.0
        while not stop.is_set():
            try:
                beat()
                if time.monotonic() >= next_sweep:
                    balance.sweep()
                    next_sweep = time.monotonic() + period
                balance.steal(time.monotonic())
                if self.step(timeout=min(period, STEAL_PERIOD)) is not None and self.starved:
                    stop.wait(0.5)  # nobody to run it yet: do not spin
            except redis.ConnectionError as e:
                log.warning("lost Redis (%s); retrying", e)
                stop.wait(1.0)


# Seconds between two stealing passes: an idle slave waits at most this long for work.
# A pass with nobody idle costs one pipelined read.
STEAL_PERIOD = 0.1


class Balancer:
    """What master-assign does between jobs besides placing: the reaper's sweep (on the
    cluster's current slaves, joined ones included, draining ones never a target) with
    the observation of finished jobs, and the stealer's passes. ``now`` is injected
    (monotonic seconds) so a test can step it."""

    def __init__(self, conn: redis.Redis, config: ClusterConfig, reaper: Reaper) -> None:
        self.conn, self.config, self.reaper = conn, config, reaper
        self.stealer = Stealer(conn, config)
        self.observer = adaptive.Observer(conn, config)
        self._next_steal = 0.0

    def sweep(self) -> int:
        cluster = membership.with_joined(self.conn, self.config)
        self.reaper.config = cluster
        self.reaper.avoid = membership.draining(self.conn)
        moved = self.reaper.sweep()
        self.observer.step({s.name: s for s in cluster.slaves})
        return moved

    def steal(self, now: float) -> int:
        """One stealing pass if one is due at ``now``; how many units moved."""
        if now < self._next_steal:
            return 0
        self._next_steal = now + STEAL_PERIOD
        return len(self.stealer.step())

