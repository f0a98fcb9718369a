"""Stealing and draining: queued units move from slow or leaving slaves to idle ones.

The decisions are pure functions of plain data (``Holder`` per slave in, ``Move`` list
out). The rule (``plan_steals``): a slave's queue is expected to finish at

    finish(s) = (queued(s) + running(s) / 2) / speed(s)

(a running unit is on average half done). While some idle slave (live, not draining,
nothing queued at the start of the pass) could finish one more unit, ``finish(t) +
1/speed(t)``, before the queue expected to finish last does, ``finish(v)``, the last
unit of that queue moves to that idle slave (the one that would finish it soonest), and
both estimates are updated. Running units never move. Speeds are per job where the job
has measured them (``job_speeds``: units per busy second of the job so far, on the
performance scale), else each slave's performance, so a slave declared equal but really
slower is recognised after its first unit. ``plan_drain`` sends every queued unit of a
draining slave to the live slave that would finish it soonest.

The mover is ``MOVE_UNIT`` (the reaper's script) with a counter ("stolen" / "drained")
instead of a loss: it moves a unit only if it is still held by the source and not
running or done, so a unit is never lost nor duplicated; the unit is then enqueued on
the thief's queue as a one-unit RQ job, and the source's RQ batch skips it at its start
(``START_UNIT`` answers "moved"). ``Stealer.step`` runs in master-assign's loop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import redis
from redis.commands.core import Script

from rqcluster import adaptive, events, keys, membership, rqjobs
from rqcluster.config import ClusterConfig
from rqcluster.models import UnitRecord, text
from rqcluster.scripts import MOVE_UNIT

log = logging.getLogger("rqcluster.steal")

UNIT_STOLEN = "unit-stolen"   # event
UNIT_DRAINED = "unit-drained"  # event
MAX_MOVES = 256  # per pass: a huge queue is rebalanced over a few passes
PINNED_KINDS = frozenset({"calibrate"})  # units that must run where they were placed


@dataclass(frozen=True)
class Holder:
    """What one pass knows about a slave."""

    speed: float                 # relative speed (> 0), performance scale
    queued: tuple[str, ...] = ()  # held units not running, in the order it will run them
    running: int = 0             # units it runs now
    alive: bool = True
    draining: bool = False

    @property
    def takes(self) -> bool:
        """May receive units."""
        return self.alive and not self.draining and self.speed > 0


@dataclass(frozen=True)
class Move:
    member: str   # "job:unit"
    source: str
    target: str
    why: str      # "stolen" | "drained"


def finish(h: Holder, queued: int | None = None) -> float:
    """When a slave's queue is expected to be done, in units of a speed-1 slave's unit."""
    n = len(h.queued) if queued is None else queued
    return (n + h.running / 2) / h.speed


def plan_steals(holders: Mapping[str, Holder], limit: int = MAX_MOVES) -> list[Move]:
    """Moves from the queues expected to finish last to idle slaves (module docstring)."""
    thieves = [s for s, h in holders.items() if h.takes and not h.queued]
    victims = {s: list(h.queued) for s, h in holders.items()
               if h.alive and not h.draining and h.queued}
    if not thieves or not victims:
        return []
    extra = {s: 0 for s in thieves}  # units given to each thief this pass
    moves: list[Move] = []
    while len(moves) < limit:
        victim = max(victims, key=lambda s: (finish(holders[s], len(victims[s])), s))
        if not victims[victim]:
            break
        thief = min(thieves, key=lambda s: (finish(holders[s], extra[s] + 1), s))
        if not finish(holders[thief], extra[thief] + 1) < \
                finish(holders[victim], len(victims[victim])):
            break
        moves.append(Move(victims[victim].pop(), victim, thief, "stolen"))
        extra[thief] += 1
    return moves


def plan_drain(holders: Mapping[str, Holder], limit: int = MAX_MOVES) -> list[Move]:
    """Every queued unit of a draining slave, each to the live slave that would finish it
    soonest (its own queue and what this pass gave it counted)."""
    targets = [s for s, h in holders.items() if h.takes]
    if not targets:
        return []
    extra = {s: 0 for s in targets}
    moves: list[Move] = []
    for source, h in holders.items():
        if not h.draining:
            continue
        for member in h.queued:
            if len(moves) >= limit:
                return moves
            target = min(targets, key=lambda s: (
                finish(holders[s], len(holders[s].queued) + extra[s] + 1), s))
            extra[target] += 1
            moves.append(Move(member, source, target, "drained"))
    return moves


def job_speeds(done: Mapping[str, int], busy: Mapping[str, float],
               prior: Mapping[str, float]) -> dict[str, float]:
    """Each slave's speed for one job: measured (units per busy second of this job) for
    the slaves that completed a unit of it, scaled so their sum equals their priors'; the
    prior (performance) for the others. Fewer than two measured: the priors."""
    rates = {s: n / busy[s] for s, n in done.items()
             if n > 0 and busy.get(s, 0.0) > 0 and s in prior}
    if len(rates) < 2:
        return dict(prior)
    scale = sum(prior[s] for s in rates) / sum(rates.values())
    return {s: rates[s] * scale if s in rates else p for s, p in prior.items()}


def unit_order(member: str, job_rank: Mapping[str, float]) -> tuple[float, int]:
    """Sort key of a held unit in the order its slave runs them: older jobs first, then
    by index (batches run in index order)."""
    job_id, _, index = member.rpartition(":")
    return job_rank.get(job_id, float("inf")), int(index)


# --- the mover -------------------------------------------------------------------------------

class Stealer:
    """One pass at a time (``step``), from master-assign's loop."""

    def __init__(self, conn: redis.Redis, config: ClusterConfig) -> None:
        self.conn = conn
        self.config = config
        self._move: Script = conn.register_script(MOVE_UNIT)
        self.queues = rqjobs.Queues(conn, config.options)

    def step(self) -> list[Move]:
        """Read the slaves, plan steals and drains, move; returns the moves made."""
        cluster = membership.with_joined(self.conn, self.config)
        names = [s.name for s in cluster.slaves]
        pipe = self.conn.pipeline(transaction=False)
        pipe.hgetall(keys.RUNNING)
        pipe.smembers(keys.DRAINING)
        pipe.hgetall(keys.OBSERVED)
        for name in names:
            pipe.exists(keys.heartbeat(name))
            pipe.scard(keys.slave_units(name))
        running_raw, drain_raw, observed_raw, *rest = pipe.execute()
        running: dict[str, int] = {}
        for entry in running_raw.values():
            try:
                slave = json.loads(entry)["slave"]
            except (ValueError, KeyError, TypeError):
                continue
            running[slave] = running.get(slave, 0) + 1
        leaving = {text(n) for n in drain_raw}
        alive = {n: bool(rest[2 * i]) for i, n in enumerate(names)}
        held = {n: int(rest[2 * i + 1]) for i, n in enumerate(names)}
        pending = {n: held[n] - running.get(n, 0) for n in names}
        self._forget_drained(leaving, alive, held)
        idle = [n for n in names if alive[n] and n not in leaving and pending[n] <= 0]
        sources = [n for n in names if alive[n] and pending[n] > 0
                   and (n in leaving or (idle and self.config.options.steal))]
        if not sources or not [n for n in names if alive[n] and n not in leaving]:
            return []
        observed = adaptive.decode_observed(observed_raw)
        prior = {s.name: adaptive.effective_performance(s, observed.get(s.name),
                                                        self.config.options.adaptive)
                 for s in cluster.slaves}
        queued = self._queued(sources, running_raw)
        speeds = self._speeds(queued, prior)
        holders = {n: Holder(speeds.get(n, prior[n]), tuple(queued.get(n, ())),
                             running.get(n, 0), alive[n], n in leaving) for n in names}
        moves = plan_drain(holders)
        if self.config.options.steal:
            moves += plan_steals({n: h for n, h in holders.items() if not h.draining})
        return [m for m in moves if self._apply(m)]

    # -- reading ---------------------------------------------------------------------------

    def _queued(self, sources: Sequence[str], running_raw: Mapping[bytes, bytes]
                ) -> dict[str, list[str]]:
        """Held units not running per source slave, in run order, pinned kinds left out."""
        pipe = self.conn.pipeline(transaction=False)
        for name in sources:
            pipe.smembers(keys.slave_units(name))
        running = {text(m) for m in running_raw}
        members = {name: sorted(text(m) for m in found if text(m) not in running)
                   for name, found in zip(sources, pipe.execute(), strict=True)}
        jobs = sorted({m.rpartition(":")[0] for ms in members.values() for m in ms})
        pipe = self.conn.pipeline(transaction=False)
        for job_id in jobs:
            pipe.hmget(keys.job(job_id), "kind", "submitted")
        rank: dict[str, float] = {}
        for job_id, (kind, submitted) in zip(jobs, pipe.execute(), strict=True):
            if kind is not None and text(kind) not in PINNED_KINDS:
                rank[job_id] = float(submitted or 0)
        return {name: sorted((m for m in ms if m.rpartition(":")[0] in rank),
                             key=lambda m: unit_order(m, rank))
                for name, ms in members.items()}

    def _speeds(self, queued: Mapping[str, list[str]], prior: Mapping[str, float]
                ) -> dict[str, float]:
        """Speeds measured by the oldest job with queued units (the one stolen first)."""
        firsts = [ms[-1].rpartition(":")[0] for ms in queued.values() if ms]
        if not firsts:
            return dict(prior)
        job_id = firsts[0]
        pipe = self.conn.pipeline(transaction=False)
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.slave_counts(job_id))
        fields, counts = pipe.execute()
        done, busy = adaptive.job_sample_inputs(fields, counts)
        return job_speeds(done, busy, prior)

    # -- moving ----------------------------------------------------------------------------

    def _apply(self, m: Move) -> bool:
        job_id, _, index = m.member.rpartition(":")
        raw = self.conn.hget(keys.units(job_id), index)
        if raw is None:
            return False
        record = UnitRecord.decode(raw)
        answer = self._move(
            keys=[keys.job(job_id), keys.partials(job_id), keys.units(job_id),
                  keys.attempts(job_id), keys.RUNNING, keys.slave_units(m.source),
                  keys.slave_units(m.target), keys.SLAVE_STATS],
            args=[index, m.member, replace(record, slave=m.target).encode(),
                  m.source, "0", self.config.options.max_attempts, "", m.why])
        if answer[0] != 1:
            return False  # started, done or moved meanwhile: nothing to do
        self.queues.requeue(m.target, job_id, int(index), m.why, int(answer[1]))
        log.info("unit %s of job %s %s: %s -> %s", index, job_id, m.why, m.source, m.target)
        events.emit(self.conn, UNIT_STOLEN if m.why == "stolen" else UNIT_DRAINED,
                    job=job_id, unit=index, slave=m.source, to=m.target)
        return True

    def _forget_drained(self, leaving: set[str], alive: Mapping[str, bool],
                        held: Mapping[str, int]) -> None:
        for name in leaving:
            if name in alive and not alive[name] and not held[name] and \
                    membership.forget_drained(self.conn, self.config, name):
                log.info("slave %s drained and gone", name)
