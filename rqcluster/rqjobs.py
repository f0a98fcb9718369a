"""How a unit travels as an RQ job: the queue of a slave and the job placed on it.

One place for placement (master-assign, its coordinator) and moves (the reaper, the
stealer), so every RQ job rqcluster writes has the same function, serializer, timeouts
and deterministic id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from rq import Queue

from rqcluster import keys
from rqcluster.config import Options
from rqcluster.models import UnitRecord
from rqcluster.placement import batches
from rqcluster.signedrq import RUN_UNIT, RUN_UNITS, unit_queue

__all__ = ["RUN_UNIT", "RUN_UNITS", "Queues", "batch_job", "slave_queue", "unit_job"]


def slave_queue(conn: redis.Redis, slave: str) -> Queue:
    """The RQ queue a slave's `rq worker` listens on: its jobs are signed unit jobs
    (``rqcluster.signedrq``), the only kind a slave runs."""
    return unit_queue(conn, slave)


def unit_job(queue: Queue, job_id: str, index: int, options: Options, description: str,
             moves: int = 0) -> Any:
    """The RQ job data of one unit, for ``Queue.enqueue_many``. Its id is deterministic:
    placing a unit twice overwrites; the n-th move gets its own id (``-m{n}``), so a
    stale copy in a dead slave's registries never shadows the live one."""
    rq_id = keys.rq_job_id(job_id, index) + (f"-m{moves}" if moves else "")
    return queue.prepare_data(RUN_UNIT, args=(job_id, index), job_id=rq_id,
                              timeout=options.unit_timeout, result_ttl=0, failure_ttl=86400,
                              description=description)


def batch_job(queue: Queue, job_id: str, indexes: list[int], options: Options,
              description: str) -> Any:
    """The RQ job data of several units of one slave, run one after the other (one RQ
    job's bookkeeping for all of them). A single unit travels as ``unit_job``. Each unit
    is still started, tracked and completed on its own, so a unit moved off the slave
    meanwhile is skipped, and the batch's id is its first unit's with a ``b`` suffix."""
    if len(indexes) == 1:
        return unit_job(queue, job_id, indexes[0], options, description)
    return queue.prepare_data(RUN_UNITS, args=(job_id, indexes),
                              job_id=f"{keys.rq_job_id(job_id, indexes[0])}b",
                              timeout=options.unit_timeout * len(indexes), result_ttl=0,
                              failure_ttl=86400, description=description)


class Queues:
    """The slaves' RQ queues on one connection, each made once: RQ reads the server's
    version once per queue object, a read that must not happen inside a MULTI."""

    def __init__(self, conn: redis.Redis, options: Options) -> None:
        self.conn = conn
        self.options = options
        self._made: dict[str, Queue] = {}

    def __call__(self, slave: str) -> Queue:
        if slave not in self._made:
            queue = self._made[slave] = slave_queue(self.conn, slave)
            queue.get_redis_server_version()
        return self._made[slave]

    def place(self, pipe: Any, job_id: str, by_slave: Mapping[str, Sequence[UnitRecord]],
              label: str) -> None:
        """Queue on ``pipe`` (in MULTI; call ``prepare`` before it) the placement of units
        on slaves: their records naming the slave, each slave's held set, and RQ jobs
        carrying them in batches. ``label`` starts each RQ job's description."""
        for slave, mine in by_slave.items():
            pipe.hset(keys.units(job_id), mapping={str(u.index): u.encode() for u in mine})
            pipe.sadd(keys.slave_units(slave),
                      *(keys.unit_member(job_id, u.index) for u in mine))
            queue = self(slave)
            queue.enqueue_many(
                [batch_job(queue, job_id, batch, self.options,
                           f"{label} unit{'s' if len(batch) > 1 else ''} {_span(batch)}")
                 for batch in batches([u.index for u in mine])], pipeline=pipe)

    def prepare(self, slaves: Iterable[str]) -> None:
        """Make the queues of these slaves now (outside the MULTI that uses them)."""
        for slave in slaves:
            self(slave)

    def requeue(self, slave: str, job_id: str, index: int, why: str, moves: int) -> None:
        """Enqueue a unit that moved to ``slave`` (lost, stolen, drained) alone, under its
        ``moves``-th id."""
        queue = self(slave)
        queue.enqueue_many([unit_job(queue, job_id, index, self.options,
                                     f"job {job_id} unit {index} ({why})", moves)])


def _span(indexes: list[int]) -> str:
    return str(indexes[0]) if len(indexes) == 1 else f"{indexes[0]}..{indexes[-1]}"
