"""Stopping units that are running: the workers running them are told over RQ's
command channel (``stop-job``, one message per unit, naming "job:unit").

The worker interrupts the unit's user code at once (``execute.stop_unit``); the unit's
effects were already settled by whoever killed it (a cancelled job, or the kill step of
a graph job), so its late completion, if any, changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import redis
from rq.command import send_command

from rqcluster import keys
from rqcluster.models import text

log = logging.getLogger("rqcluster.kill")


def stop_units(conn: redis.Redis, members: Iterable[str]) -> int:
    """Tell the workers running these units ("job:unit") to stop them; returns how many
    were running."""
    wanted = list(members)
    if not wanted:
        return 0
    told = 0
    for member, raw in zip(wanted, conn.hmget(keys.RUNNING, wanted), strict=True):
        if raw is None:
            continue
        try:
            worker = json.loads(raw)["worker"]
        except (ValueError, KeyError):
            continue
        send_command(conn, worker, "stop-job", job_id=member)
        told += 1
    return told


def stop_job(conn: redis.Redis, job_id: str) -> int:
    """Stop every running unit of a job (it was cancelled, failed or finished early)."""
    prefix = f"{job_id}:"
    members = [m for m in map(text, conn.hkeys(keys.RUNNING)) if m.startswith(prefix)]
    told = stop_units(conn, members)
    if told:
        log.info("job %s: told %d worker(s) to stop its running units", job_id, told)
    return told
