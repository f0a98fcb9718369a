"""Submitting a job: validate everything, then write it to Redis in one transaction.

Everything that can be refused is refused before the first write (``kind.prepare``
reads and checks the files, shapes, dtypes and functions). The job record, its inputs,
its index entry and its place on the submitted list then go in one MULTI/EXEC: a job is
either wholly in Redis or not at all.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from rqcluster import envelope, events, keys, seeding, store
from rqcluster.config import DEFAULT_MAX_PAYLOAD_BYTES, ClusterConfig, current
from rqcluster.errors import InputError
from rqcluster.kinds import Function, Items, Prepared, Program, get_kind
from rqcluster.models import JobRecord, JobState
from rqcluster.secret import cluster_key

# Largest job (inputs) accepted in one submission unless the config's
# security.max-payload-bytes says otherwise; Redis must hold it all in memory.
MAX_SUBMIT_BYTES = DEFAULT_MAX_PAYLOAD_BYTES


def new_job_id() -> str:
    """A short, unique, time-ordered id: 8 hex digits of seconds + 6 random."""
    return f"{int(time.time()):08x}{secrets.token_hex(3)}"


def input_size(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Items):
        return sum(len(line) for line in value.lines) + 8 * (len(value.lines) + 1)
    if isinstance(value, Function | Program):
        return len(value.blob)
    raise TypeError(f"unknown input type {type(value).__name__}")


@dataclass(frozen=True)
class ValidatedJob:
    """A job that passed every check and is ready to be written."""

    kind: str
    prepared: Prepared
    description: str
    seed: int | None = None  # the job seed (``rqcluster.seeding``)


def validate(kind_name: str, config: ClusterConfig | None = None, seed: int | None = None,
             **params: Any) -> ValidatedJob:
    """Every check a job gets before anything is written (no Redis needed). Parameters a
    kind takes from the cluster's options (matmul's ``memory_budget``) come from
    ``config`` (default: the config this process loaded) unless given. ``seed`` is the
    job seed (default: a random one); a seeded kind (montecarlo) takes it as its own."""
    config = config or current()
    kind = get_kind(kind_name)
    seed = seeding.new_seed() if seed is None else seeding.check_seed(seed, f"{kind_name}: seed")
    if kind.seeded:
        params = {**params, "seed": seed}
    if config is not None:
        params = {**kind.defaults(config.options), **params}
    prepared = kind.prepare(**params)
    size = sum(input_size(v) for v in prepared.inputs.values())
    limit = max_payload_bytes(config)
    if size > limit:
        raise InputError(f"{kind_name}: inputs are {_size(size)}, more than the {_size(limit)} "
                         "one job may hold (security.max-payload-bytes)")
    return ValidatedJob(kind_name, prepared, kind.describe(prepared.params), seed)


def max_payload_bytes(config: ClusterConfig | None = None) -> int:
    """The configured limit on one job's inputs (the default without a config)."""
    config = config or current()
    return config.security.max_payload_bytes if config else MAX_SUBMIT_BYTES


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n:,} bytes"


def write(conn: redis.Redis, job: ValidatedJob, key: bytes | None = None) -> str:
    """Write a validated job in one transaction; returns its id. Big arrays are staged
    first (chunks with a TTL, read from their file a batch at a time) and made permanent
    by the same transaction, so a job appears whole or not at all. Functions are sealed
    with ``key`` (default: the secret of the config this process loaded), bound to this
    job and input, before they go; no secret, nothing written."""
    key = key or cluster_key()
    job_id = new_job_id()
    now = time.time()
    record = JobRecord(id=job_id, kind=job.kind, state=JobState.SUBMITTED,
                       params=job.prepared.params, description=job.description,
                       submitted=now, inputs=tuple(job.prepared.inputs), seed=job.seed)
    staged = {name: store.stage_array(conn, keys.job_input(job_id, name), value)
              for name, value in job.prepared.inputs.items()
              if isinstance(value, np.ndarray) and value.nbytes > store.STAGE_ABOVE_BYTES}
    pipe = conn.pipeline(transaction=True)
    for name, value in job.prepared.inputs.items():
        base = keys.job_input(job_id, name)
        if name in staged:
            staged[name](pipe)
        elif isinstance(value, np.ndarray):
            store.put_array(pipe, base, value)
        elif isinstance(value, Items):
            store.put_items(pipe, base, value.lines, fmt=value.format)
        else:  # code (a pickled function, a program file): sealed, bound to this job
            what = "program" if isinstance(value, Program) else "function"
            ctx = envelope.Context(f"{what}:{name}", job_id, "", job.kind)
            store.put_blob(pipe, base, envelope.seal(key, ctx, value.blob, compress=True))
    pipe.hset(keys.job(job_id), mapping=record.encode())
    pipe.zadd(keys.JOBS_INDEX, {job_id: now})
    pipe.zadd(keys.UNFINISHED, {job_id: now})
    pipe.rpush(keys.SUBMITTED, job_id)
    events.emit(pipe, events.JOB_SUBMITTED, job=job_id, kind=job.kind)
    pipe.execute()
    return job_id


def submit(conn: redis.Redis, kind_name: str, seed: int | None = None, **params: Any) -> str:
    """Validate a job and write it; returns its id. Nothing is written if it is refused."""
    return write(conn, validate(kind_name, seed=seed, **params))
