"""The slave side of a unit: what `rq worker` runs for every RQ job rqcluster enqueues.

``run_unit(job_id, unit)`` is the RQ job function. It starts the unit with one script
(count the attempt, record which worker runs it, read what it needs), runs the kind's
``process`` on the job's inputs, and finishes with the completion script: mark the unit
done (first time only), decrement the job's counter, announce it on the results stream.
An exception in user code fails the whole job with the remote traceback; units of a job
that has ended are skipped without running.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import weakref
from typing import Any

import redis
from redis.commands.core import Script
from rq import get_current_job

from rqcluster import codec, jobdata, keys, liveness
from rqcluster.config import Options
from rqcluster.errors import InputError, RQClusterError
from rqcluster.jobs import end_job
from rqcluster.kinds import get_kind
from rqcluster.models import JobState, UnitRecord
from rqcluster.scripts import COMPLETE_UNIT, START_UNIT
from rqcluster.signedrq import verify_unit

log = logging.getLogger("rqcluster.execute")

QUEUE_PREFIX = keys.slave_queue("")
# The unit scripts per client, called by EVALSHA (loaded once per server) instead of
# sending their text with every unit.
_scripts: weakref.WeakKeyDictionary[redis.Redis, tuple[Script, Script]] = \
    weakref.WeakKeyDictionary()


def _unit_scripts(conn: redis.Redis) -> tuple[Script, Script]:
    if conn not in _scripts:
        _scripts[conn] = (conn.register_script(START_UNIT), conn.register_script(COMPLETE_UNIT))
    return _scripts[conn]


MAX_PARTIAL_BYTES = 500 * 2**20  # Redis refuses values over 512 MB (proto-max-bulk-len)
_options = Options()
# What this process runs, shared with the slave worker's heartbeat thread.
status = liveness.WorkerStatus(slave="", worker="")
_conn: redis.Redis | None = None  # the worker's patient client (RQ's own gives up in ~3 s)


def configure(options: Options, worker_status: liveness.WorkerStatus | None = None,
              conn: redis.Redis | None = None) -> None:
    """Use the cluster's options, the worker's status record and its Redis client (set
    by the slave worker at start)."""
    global _options, status, _conn
    _options = options
    if worker_status is not None:
        status = worker_status
    _conn = conn


def run_unit(job_id: str, unit: int) -> str:
    """Run one unit of a job on this slave; returns what happened, for RQ's log."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_unit must run inside an RQ worker")
    slave = (job.origin or "").removeprefix(QUEUE_PREFIX)
    return execute_unit(_conn or job.connection, job_id, unit, slave)


def run_units(job_id: str, indexes: list[int]) -> str:
    """Run several units of a job one after the other (one RQ job for all of them)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_units must run inside an RQ worker")
    slave = (job.origin or "").removeprefix(QUEUE_PREFIX)
    conn = _conn or job.connection
    outcomes = [execute_unit(conn, job_id, int(i), slave) for i in indexes]
    done = sum(o.startswith("done") for o in outcomes)
    return f"{done} of {len(indexes)} units done; last: {outcomes[-1]}"


def execute_unit(conn: redis.Redis, job_id: str, index: int, slave: str) -> str:
    """The body of ``run_unit``, callable without RQ (tests, benchmarks)."""
    member = keys.unit_member(job_id, index)
    worker = status.worker or f"{slave}.{liveness.PID}"
    start, complete = _unit_scripts(conn)
    status.begin(member)
    try:
        answer = start(
            keys=[keys.job(job_id), keys.units(job_id), keys.attempts(job_id), keys.RUNNING,
                  keys.worker(worker), keys.partials(job_id), keys.slave_units(slave)],
            args=[index, member, liveness.running_entry(worker, slave),
                  status.encode(), liveness.ttl_ms(_options.heartbeat_ttl)])
        if answer[0] != JobState.RUNNING.value.encode():
            why = answer[0].decode()
            if why in ("done", "moved"):
                return f"skipped: unit {index} of job {job_id} is {why}"
            jobdata.forget(job_id)
            return f"skipped: job {job_id} is {why}"
        return _run(conn, complete, job_id, index, slave, member, answer)
    finally:
        status.end()


def _run(conn: redis.Redis, complete: Script, job_id: str, index: int, slave: str,
         member: str, answer: list[Any]) -> str:
    _, kind_name, params_raw, unit_raw, attempt = answer
    unit = UnitRecord.decode(unit_raw)
    if attempt > 1:
        log.info("unit %d of job %s: attempt %d", index, job_id, attempt)
    started = time.perf_counter()
    try:
        verify_unit(job_id, kind_name.decode(), unit)  # a forged spec is refused unused
        kind = get_kind(kind_name.decode())
        value = kind.process(unit.spec, json.loads(params_raw), jobdata.JobInputs(conn, job_id))
        partial = codec.encode(value, f"the partial of unit {index}")
        if len(partial) > MAX_PARTIAL_BYTES:
            raise InputError(f"unit {index}'s partial is {len(partial) / 2**20:.0f} MiB; Redis "
                             f"holds at most {MAX_PARTIAL_BYTES / 2**20:.0f} MiB in one value "
                             "(split the job into more units)")
    except (Exception, SystemExit) as e:  # user code may raise anything, exit included
        return _fail(conn, job_id, index, slave, e)
    took = time.perf_counter() - started
    try:
        remaining = complete(
            keys=[keys.job(job_id), keys.partials(job_id), keys.slave_counts(job_id),
                  keys.RESULTS_STREAM, keys.units(job_id), keys.RUNNING, keys.SLAVE_STATS,
                  keys.slave_rate(slave)],
            args=[job_id, index, slave, partial, f"{took:.6f}", member, keys.SLAVE_PREFIX])
    except redis.ResponseError as e:  # e.g. a partial over Redis's value limit: final
        return _fail(conn, job_id, index, slave, e)
    if remaining == -2:
        return f"duplicate: unit {index} of job {job_id} was already done"
    if remaining == -1:
        return f"skipped: job {job_id} ended while unit {index} ran"
    return f"done: unit {index} of job {job_id} in {took:.3f} s, {remaining} left"


def _fail(conn: redis.Redis, job_id: str, index: int, slave: str,
          exc: BaseException) -> str:
    conn.hdel(keys.RUNNING, keys.unit_member(job_id, index))
    if conn.hget(keys.job(job_id), "state") != JobState.RUNNING.value.encode():
        return f"skipped: job {job_id} ended while unit {index} ran"
    message = str(exc) if isinstance(exc, RQClusterError) else f"{type(exc).__name__}: {exc}"
    error: dict[str, Any] = {"unit": index, "slave": slave, "message": message,
                             "traceback": traceback.format_exc()}
    if end_job(conn, job_id, JobState.FAILED, error, _options.result_ttl):
        log.error("job %s failed in unit %d: %s", job_id, index, message)
    jobdata.forget(job_id)
    return f"failed: unit {index} of job {job_id}: {message}"
