"""How a unit travels as an RQ job: the queue of a slave and the job placed on it.

One place for both placement (master-assign) and moves (the reaper), so every RQ job
rqcluster writes has the same function, serializer, timeouts and deterministic id.
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue

from rqcluster import keys
from rqcluster.config import Options
from rqcluster.signedrq import RUN_UNIT, RUN_UNITS, unit_queue

__all__ = ["RUN_UNIT", "RUN_UNITS", "batch_job", "slave_queue", "unit_job"]


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
