"""rqcluster's plug-ins for RQ's documented hooks: a signed serializer and a job class.

A slave runs the standard `rq worker`; what it will run is decided here. RQ job data is
JSON, but JSON can still name any importable function (``os.system``), and RQ zlib-
decompresses a job's data before its serializer sees it. So:

- ``UnitJob.data`` is the JSON call, sealed with the cluster secret and bound to the RQ
  job id (``rqcluster.envelope``), stored uncompressed;
- ``UnitJob.restore`` checks that envelope *before* RQ decompresses or parses anything,
  drops every field rqcluster never sets (callbacks, webhooks, dependencies, meta,
  results, exception text), and accepts only ``rqcluster.execute.run_unit(job, unit)``
  or ``run_units(job, [units])`` whose job and units are the ones the RQ job id names.
  Anything else — a default-pickle job pushed onto the queue, a tampered or replayed
  one — is refused unread and never run:
  RQ is told the job does not exist, and the refusal is logged;
- ``SignedSerializer`` signs whatever else RQ serializes (meta, return values), so no
  unsigned bytes are ever deserialized by a slave.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import UNEVALUATED, Job

from rqcluster import envelope, keys
from rqcluster.models import UnitRecord
from rqcluster.secret import cluster_key

log = logging.getLogger("rqcluster.slave")

RUN_UNIT = "rqcluster.execute.run_unit"
RUN_UNITS = "rqcluster.execute.run_units"
MAX_BATCH = 10_000  # unit indexes one RQ job may name (master-assign sends at most 64)
# A unit's RQ job data is a few hundred bytes; anything much bigger is refused unread.
MAX_JOB_DATA = 64 * 1024
# Job hash fields RQ may read that rqcluster's own jobs can legitimately have; the rest
# (callbacks, webhooks, dependencies, meta, result, exc_info, repeats, rate limits) is
# dropped before RQ sees it, so a forged field can neither import nor call anything.
KEPT_FIELDS = frozenset({
    b"data", b"created_at", b"origin", b"worker_name", b"description", b"enqueued_at",
    b"started_at", b"ended_at", b"last_heartbeat", b"status", b"timeout", b"result_ttl",
    b"failure_ttl", b"ttl", b"group_id", b"number_of_retries", b"retries_left",
    b"retry_intervals", b"enqueue_at_front", b"enqueue_at_front_on_retry",
})


class RefusedJob(NoSuchJobError):
    """Raised when an RQ job on a slave's queue is not a validly signed rqcluster unit."""


class SignedSerializer:
    """RQ serializer (``dumps``/``loads``): JSON inside a signed envelope."""

    CONTEXT = envelope.Context("rq-value", "")

    @classmethod
    def dumps(cls, obj: Any) -> bytes:
        return envelope.seal(cluster_key(), cls.CONTEXT, json.dumps(obj).encode())

    @classmethod
    def loads(cls, data: bytes) -> Any:
        return json.loads(envelope.open_(cluster_key(), cls.CONTEXT, data, MAX_JOB_DATA))


def job_context(rq_job_id: str) -> envelope.Context:
    """The context a unit's RQ job data is bound to: its own RQ job id."""
    return envelope.Context("rq-job", rq_job_id)


def check_call(rq_job_id: str, call: Any) -> tuple[str, list[int]]:
    """(job id, unit indexes) of a verified call, if it is ``run_unit(job, unit)`` or
    ``run_units(job, [units])`` of the very unit(s) its RQ job id names; ValueError
    otherwise."""
    if not (isinstance(call, list) and len(call) == 4):
        raise ValueError("not an RQ call")
    func, instance, args, kwargs = call
    if func not in (RUN_UNIT, RUN_UNITS) or instance is not None or kwargs != {}:
        raise ValueError(f"calls {func!r}; a slave runs only {RUN_UNIT} and {RUN_UNITS}")
    if not (isinstance(args, list) and len(args) == 2 and isinstance(args[0], str)):
        raise ValueError(f"{func} takes (job id, unit index or indexes)")
    job_id, units = args
    if func == RUN_UNIT:
        if type(units) is not int or not _names_unit(rq_job_id, job_id, units):
            raise ValueError(f"names unit {units!r} of job {job_id}, not this RQ job")
        return job_id, [units]
    if not (isinstance(units, list) and 0 < len(units) <= MAX_BATCH
            and all(type(i) is int and i >= 0 for i in units)):
        raise ValueError(f"run_units takes 1 to {MAX_BATCH} unit indexes")
    if rq_job_id != keys.rq_job_id(job_id, units[0]) + "b":
        raise ValueError(f"names units {units[0]}.. of job {job_id}, not this RQ job")
    return job_id, units


def _names_unit(rq_job_id: str, job_id: str, index: int) -> bool:
    """True if ``rq_job_id`` is the unit's RQ job id, or that of its n-th move (``-mN``,
    see ``rqjobs.unit_job``)."""
    base = keys.rq_job_id(job_id, index)
    if rq_job_id == base:
        return True
    moves = rq_job_id.removeprefix(base + "-m")
    return moves != rq_job_id and moves.isdigit() and moves[0] != "0"


class UnitJob(Job):
    """RQ job class of rqcluster units (``-j`` / ``job_class``); see the module doc."""

    @property
    def data(self) -> bytes:
        if self._data is UNEVALUATED:
            args = list(self._args) if isinstance(self._args, list | tuple) else []
            kwargs = dict(self._kwargs) if isinstance(self._kwargs, dict) else {}
            call = [self._func_name, None, args, kwargs]
            check_call(self.id, call)  # the master never signs anything else
            self._data = envelope.seal(cluster_key(), job_context(self.id),
                                       json.dumps(call).encode())
        return self._data  # type: ignore[return-value]

    @data.setter
    def data(self, value: bytes) -> None:
        Job.data.fset(self, value)  # type: ignore[attr-defined]

    def _deserialize_data(self) -> None:
        call = json.loads(envelope.open_(cluster_key(), job_context(self.id), self.data,
                                         MAX_JOB_DATA))
        check_call(self.id, call)
        self._func_name, self._instance, self._args, self._kwargs = call

    @property
    def func(self) -> Any:
        from rqcluster import execute  # never import_attribute a name read from Redis
        if self.func_name == RUN_UNIT:
            return execute.run_unit
        if self.func_name == RUN_UNITS:
            return execute.run_units
        raise RefusedJob(f"RQ job {self.id}: refused to run {self.func_name!r}")

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[Any, Any]:
        obj = super().to_dict(include_meta=include_meta, include_result=include_result)
        obj["data"] = self.data  # sealed and small: stored as is, never zlib-compressed
        return obj

    def restore(self, raw_data: Any) -> None:
        raw = {k if isinstance(k, bytes) else str(k).encode(): v for k, v in raw_data.items()}
        try:
            sealed = raw.get(b"data")
            if sealed is not None and len(sealed) > MAX_JOB_DATA:
                raise envelope.EnvelopeError(f"job data is {len(sealed)} bytes (refused "
                                             "unread)")
            call = json.loads(envelope.open_(cluster_key(), job_context(self.id), sealed,
                                             MAX_JOB_DATA))
            check_call(self.id, call)
        except (envelope.EnvelopeError, ValueError) as e:
            log.error("refused RQ job %s: %s; nothing was run", self.id, e)
            raise RefusedJob(f"RQ job {self.id} refused: {e}") from None
        super().restore({k: v for k, v in raw.items() if k in KEPT_FIELDS})
        assert isinstance(sealed, bytes)  # open_ refused anything else
        self._data = sealed
        self._func_name, self._instance, self._args, self._kwargs = call


def _unit_signed_bytes(unit: UnitRecord) -> bytes:
    # What a unit's signature covers: what the slave will do (spec) and in which stage;
    # not the slave it is placed on or its attempt count, which others may change.
    return json.dumps({"spec": unit.spec, "stage": unit.stage}, sort_keys=True,
                      separators=(",", ":")).encode()


def unit_context(job_id: str, kind: str, index: int) -> envelope.Context:
    return envelope.Context("unit", job_id, str(index), kind)


def sign_unit(job_id: str, kind: str, unit: UnitRecord) -> UnitRecord:
    """The unit with its signature (made by master-assign, which holds the secret)."""
    return replace(unit, sig=envelope.sign_detached(
        cluster_key(), unit_context(job_id, kind, unit.index), _unit_signed_bytes(unit)))


def verify_unit(job_id: str, kind: str, unit: UnitRecord) -> None:
    """EnvelopeError unless the unit's spec is the one master-assign signed for this job,
    kind and unit index (checked on the slave before the spec is used)."""
    envelope.verify_detached(cluster_key(), unit_context(job_id, kind, unit.index),
                             _unit_signed_bytes(unit), unit.sig)


SLAVE_WORKER = "workers.slave.SlaveWorker"


def require_slave_worker(argv: list[str], environ: Any) -> None:
    """ConfigError if ``argv`` is an `rq worker` command with a worker class other than
    rqcluster's: RQ's default worker and job class would run unsigned (pickled) jobs."""
    from pathlib import Path

    from rqcluster.errors import ConfigError
    if len(argv) < 2 or Path(argv[0]).name != "rq" or argv[1] != "worker":
        return
    chosen = environ.get("RQ_WORKER_CLASS")
    for i, arg in enumerate(argv[2:], start=2):
        if arg in ("-w", "--worker-class") and i + 1 < len(argv):
            chosen = argv[i + 1]
        elif arg.startswith("--worker-class="):
            chosen = arg.partition("=")[2]
        elif arg.startswith("-w") and len(arg) > 2:
            chosen = arg[2:]
    if chosen != SLAVE_WORKER:
        raise ConfigError(f"a slave runs `rq worker -c workers.settings -w {SLAVE_WORKER}`, "
                          f"not the worker class {chosen or 'rq.Worker (the default)'}: "
                          "only rqcluster's refuses unsigned jobs")


def unit_queue(conn: redis.Redis, slave: str) -> Queue:
    """The RQ queue of a slave, producing and reading signed unit jobs."""
    return Queue(keys.slave_queue(slave), connection=conn, job_class=UnitJob,
                 serializer=SignedSerializer)
