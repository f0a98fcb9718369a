"""The slave side of a unit: what `rq worker` runs for every RQ job rqcluster enqueues.

``run_unit(job_id, unit)`` and ``run_units(job_id, units)`` are the RQ job functions.
Each unit starts with one script (count the attempt, record which worker runs it, read
what it needs), runs the kind's ``process`` on the job's inputs, and finishes with the
completion script: mark the unit done (first time only), decrement the job's counter,
announce it on the results stream. In a batch, one unit's completion and the next one's
start share a round trip. An exception in user code fails the whole job with the remote
traceback; units of a job that has ended, or moved off this slave, are skipped.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import traceback
import weakref
from typing import Any

import redis
from rq import get_current_job

from rqcluster import codec, jobdata, keys, liveness, seeding
from rqcluster.config import Options
from rqcluster.errors import InputError, RQClusterError
from rqcluster.jobs import end_job
from rqcluster.kinds import get_kind
from rqcluster.models import JobState, UnitRecord
from rqcluster.scripts import COMPLETE_AND_START, COMPLETE_UNIT, START_UNIT
from rqcluster.signedrq import verify_unit

log = logging.getLogger("rqcluster.execute")

QUEUE_PREFIX = keys.slave_queue("")
MAX_PARTIAL_BYTES = 500 * 2**20  # Redis refuses values over 512 MB (proto-max-bulk-len)


class _Scripts:
    """The unit scripts of one client, called by EVALSHA (loaded once per server)."""

    def __init__(self, conn: redis.Redis) -> None:
        self.start = conn.register_script(START_UNIT)
        self.complete = conn.register_script(COMPLETE_UNIT)
        self.complete_and_start = conn.register_script(COMPLETE_AND_START)


_scripts: weakref.WeakKeyDictionary[redis.Redis, _Scripts] = weakref.WeakKeyDictionary()


def _unit_scripts(conn: redis.Redis) -> _Scripts:
    if conn not in _scripts:
        _scripts[conn] = _Scripts(conn)
    return _scripts[conn]


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


class UnitKilled(BaseException):
    """Raised inside a running unit that was told to stop (killed by its job's scheduler,
    or its job was cancelled). A BaseException, so user code's ``except Exception`` does
    not swallow it."""


STOP_SIGNAL = signal.SIGUSR1
_stoppable = False  # True only while user code (a kind's process) runs
_stop_member: str | None = None


def install_stop_handler() -> None:
    """Let ``stop_unit`` interrupt this process's main thread (call it from there, once,
    at the worker's start)."""
    signal.signal(STOP_SIGNAL, _on_stop)


def _on_stop(signum: int, frame: object) -> None:
    if _stoppable and _stop_member == status.unit:
        raise UnitKilled(f"unit {status.unit} was stopped")


def stop_unit(member: str) -> bool:
    """Stop the unit ``member`` ("job:unit") if this process is running its user code
    now (from any thread: the worker's command listener); True if asked to stop."""
    global _stop_member
    if not _stoppable or status.unit != member:
        return False
    _stop_member = member
    # A real signal to the main thread (not _thread.interrupt_main): it also wakes a
    # blocking call there (sleep, a wait on a subprocess) with EINTR.
    signal.pthread_kill(threading.main_thread().ident or 0, STOP_SIGNAL)
    return True


def _rq_context(what: str) -> tuple[redis.Redis, str]:
    job = get_current_job()
    if job is None:
        raise RuntimeError(f"{what} must run inside an RQ worker")
    return _conn or job.connection, (job.origin or "").removeprefix(QUEUE_PREFIX)


def run_unit(job_id: str, unit: int) -> str:
    """Run one unit of a job on this slave; returns what happened, for RQ's log."""
    conn, slave = _rq_context("run_unit")
    return execute_unit(conn, job_id, unit, slave)


def run_units(job_id: str, indexes: list[int]) -> str:
    """Run several units of a job one after the other (one RQ job for all of them)."""
    conn, slave = _rq_context("run_units")
    outcomes = execute_units(conn, job_id, [int(i) for i in indexes], slave)
    done = sum(o.startswith("done") for o in outcomes)
    return f"{done} of {len(outcomes)} units done; last: {outcomes[-1]}"


def execute_unit(conn: redis.Redis, job_id: str, index: int, slave: str) -> str:
    """The body of ``run_unit``, callable without RQ (tests, benchmarks)."""
    return execute_units(conn, job_id, [index], slave)[0]


def execute_units(conn: redis.Redis, job_id: str, indexes: list[int],
                  slave: str) -> list[str]:
    """Run units of one job in order; what happened to each."""
    return _Batch(conn, job_id, slave).run(indexes)


class _Batch:
    """Units of one job run in a row by this worker."""

    def __init__(self, conn: redis.Redis, job_id: str, slave: str) -> None:
        self.conn, self.job_id, self.slave = conn, job_id, slave
        self.worker = status.worker or f"{slave}.{liveness.PID}"
        self.scripts = _unit_scripts(conn)
        self.indexes: list[int] = []

    def run(self, indexes: list[int]) -> list[str]:
        outcomes: list[str] = []
        try:
            self.indexes = indexes
            answer: list[Any] | None = self.scripts.start(**self._start(indexes[0]))
            for at, index in enumerate(indexes):
                following = indexes[at + 1] if at + 1 < len(indexes) else None
                assert answer is not None  # every unit but the first was started already
                outcome, answer = self._one(index, answer, following)
                outcomes.append(outcome)
        finally:
            status.end()
        return outcomes

    def _start(self, index: int) -> dict[str, Any]:
        member = keys.unit_member(self.job_id, index)
        status.begin(member)
        job_id = self.job_id
        return {"keys": [keys.job(job_id), keys.units(job_id), keys.attempts(job_id),
                         keys.RUNNING, keys.worker(self.worker), keys.partials(job_id),
                         keys.slave_units(self.slave)],
                "args": [index, member,
                         liveness.running_entry(self.worker, self.slave, self._after(index)),
                         status.encode(), liveness.ttl_ms(_options.heartbeat_ttl)]}

    def _after(self, index: int) -> list[int]:
        return self.indexes[self.indexes.index(index) + 1:]

    def _complete(self, index: int, partial: bytes, took: float) -> dict[str, Any]:
        job_id = self.job_id
        return {"keys": [keys.job(job_id), keys.partials(job_id), keys.slave_counts(job_id),
                         keys.RESULTS_STREAM, keys.units(job_id), keys.RUNNING,
                         keys.SLAVE_STATS, keys.slave_rate(self.slave), keys.deps(job_id),
                         keys.dependents(job_id), keys.ready(job_id), keys.SCHEDULE_STREAM],
                "args": [job_id, index, self.slave, partial, f"{took:.6f}",
                         keys.unit_member(job_id, index), keys.SLAVE_PREFIX]}

    def _one(self, index: int, answer: list[Any],
             following: int | None) -> tuple[str, list[Any] | None]:
        """Run one started unit; its outcome and the start answer of ``following``."""
        job_id = self.job_id
        if answer[0] != JobState.RUNNING.value.encode():
            why = answer[0].decode()
            if why in ("done", "moved"):
                outcome = f"skipped: unit {index} of job {job_id} is {why}"
            else:
                jobdata.forget(job_id)
                outcome = f"skipped: job {job_id} is {why}"
            return outcome, self._start_next(following)
        kind_name, params_raw, unit_raw, attempt = answer[1:5]
        job_seed = int(answer[5]) if len(answer) > 5 and answer[5] is not None else None
        unit = UnitRecord.decode(unit_raw)
        if attempt > 1:
            log.info("unit %d of job %s: attempt %d", index, job_id, attempt)
        started = time.perf_counter()
        global _stoppable
        try:
            verify_unit(job_id, kind_name.decode(), unit)  # a forged spec is refused unused
            kind = get_kind(kind_name.decode())
            _stoppable = True
            try:
                with seeding.unit_context(job_id, index, job_seed):  # unit_rng() for any kind
                    value = kind.process(unit.spec, json.loads(params_raw),
                                         jobdata.JobInputs(self.conn, job_id))
            finally:
                _stoppable = False
            partial = codec.encode(value, f"the partial of unit {index}")
            if len(partial) > MAX_PARTIAL_BYTES:
                raise InputError(f"unit {index}'s partial is {len(partial) / 2**20:.0f} MiB; "
                                 f"Redis holds at most {MAX_PARTIAL_BYTES / 2**20:.0f} MiB in "
                                 "one value (split the job into more units)")
        except UnitKilled:
            self.conn.hdel(keys.RUNNING, keys.unit_member(job_id, index))
            log.info("unit %d of job %s stopped while it ran", index, job_id)
            return f"killed: unit {index} of job {job_id}", self._start_next(following)
        except (Exception, SystemExit) as e:  # user code may raise anything, exit included
            return _fail(self.conn, job_id, index, self.slave, e), self._start_next(following)
        took = time.perf_counter() - started
        try:
            if following is None:
                remaining, answer_next = self.scripts.complete(
                    **self._complete(index, partial, took)), None
            else:
                done, start = self._complete(index, partial, took), self._start(following)
                remaining, answer_next = self.scripts.complete_and_start(
                    keys=done["keys"] + start["keys"], args=done["args"] + start["args"])
        except redis.ResponseError as e:  # e.g. a partial over Redis's value limit: final
            return _fail(self.conn, job_id, index, self.slave, e), self._start_next(following)
        if remaining == -2:
            outcome = f"duplicate: unit {index} of job {job_id} was already done"
        elif remaining == -1:
            outcome = f"skipped: job {job_id} ended while unit {index} ran"
        else:
            outcome = f"done: unit {index} of job {job_id} in {took:.3f} s, {remaining} left"
        return outcome, answer_next

    def _start_next(self, following: int | None) -> list[Any] | None:
        return None if following is None else self.scripts.start(**self._start(following))


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
