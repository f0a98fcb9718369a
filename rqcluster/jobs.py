"""Reading and ending jobs: status, progress, waiting, results, cancel, clean-up.

Shared by the CLI, the Python API, the combiner and the slaves; every function takes a
Redis client and a job id and never prints.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import redis

from rqcluster import codec, events, keys, liveness, store
from rqcluster.errors import DecodeError, InputError, JobFailed, JobTimeout, NoSuchJob
from rqcluster.kill import stop_job
from rqcluster.kinds import get_kind
from rqcluster.models import JobRecord, JobState, UnitRecord
from rqcluster.npyfile import fill_rows, save_npy, save_npy_blocks
from rqcluster.scripts import END_JOB


@dataclass(frozen=True)
class JobStatus:
    """A job's record plus how its units are spread over the slaves."""

    record: JobRecord
    per_slave: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {**self.record.to_dict(), "per_slave": self.per_slave}


def get_record(conn: redis.Redis, job_id: str) -> JobRecord:
    raw = conn.hgetall(keys.job(job_id))
    if not raw:
        raise NoSuchJob(f"no job {job_id!r} (never submitted, or expired)")
    return JobRecord.decode(raw)


def get_status(conn: redis.Redis, job_id: str) -> JobStatus:
    pipe = conn.pipeline(transaction=False)
    pipe.hgetall(keys.job(job_id))
    pipe.hgetall(keys.slave_counts(job_id))
    raw, counts = pipe.execute()
    if not raw:
        raise NoSuchJob(f"no job {job_id!r} (never submitted, or expired)")
    per_slave = {k.decode(): int(v) for k, v in sorted(counts.items())}
    return JobStatus(JobRecord.decode(raw), per_slave)


def list_jobs(conn: redis.Redis, limit: int = 20) -> list[JobRecord]:
    """The most recent jobs, newest first (jobs whose records expired are skipped)."""
    ids = [i.decode() for i in conn.zrevrange(keys.JOBS_INDEX, 0, limit - 1)]
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(keys.job(job_id))
    raws = pipe.execute()
    expired = [job_id for job_id, raw in zip(ids, raws, strict=True) if not raw]
    if expired:
        conn.zrem(keys.JOBS_INDEX, *expired)
    return [JobRecord.decode(raw) for raw in raws if raw]


def wait(conn: redis.Redis, job_id: str, timeout: float | None = None,
         on_progress: Callable[[JobRecord], None] | None = None,
         poll: float = 0.05) -> JobRecord:
    """Block until the job ends; JobTimeout after ``timeout`` seconds (the job goes on).

    Blocks on the job's ``ended`` list (so the end is seen at once) and, between wake-ups,
    re-reads the record with a gently growing interval (one small HGETALL) to call
    ``on_progress`` whenever it changes.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last: JobRecord | None = None
    shown: JobRecord | None = None
    interval = poll
    changed = time.monotonic()
    while True:
        record = get_record(conn, job_id)
        if record != last:
            changed, interval, last = time.monotonic(), poll, record
        view = record if time.monotonic() - changed < STALL_SECONDS \
            else explain_stall(conn, record)
        if on_progress is not None and view != shown:
            on_progress(view)
        shown = view
        if record.state.terminal:
            return record
        if deadline is not None and time.monotonic() >= deadline:
            raise JobTimeout(f"job {job_id} still {record.state.value} after {timeout:g} s "
                             f"({record.done_units}/{record.total or '?'} units); it was not "
                             f"cancelled: `rqcluster status {job_id}`"
                             + (f"; {view.waiting}" if view.waiting else ""))
        pause = interval if deadline is None else min(interval, max(0.0, deadline -
                                                                     time.monotonic()))
        if pause > 0:  # woken at once when the job ends; else look again for progress
            conn.blmove(keys.ended(job_id), keys.ended(job_id), pause, "LEFT", "RIGHT")
        interval = min(interval * 1.5, 0.5)


# A job whose record has not changed this long gets its masters checked, so a client
# waiting on a cluster with no master running says so instead of waiting silently.
STALL_SECONDS = 3.0
NO_ASSIGNER = ("no master-assign is running (start `rqcluster node --mode assign-reduce` "
               "or `--mode assign`)")
NO_COMBINER = ("every unit is done but no master-combine is running (start `rqcluster node "
               "--mode assign-reduce` or `--mode reduce`)")


def explain_stall(conn: redis.Redis, record: JobRecord) -> JobRecord:
    """The record with ``waiting`` saying which master is missing, if one is."""
    if record.state is JobState.SUBMITTED and not record.waiting \
            and not liveness.role_alive(conn, "master-assign"):
        return replace(record, waiting=NO_ASSIGNER)
    if record.state is JobState.RUNNING and record.remaining == 0 \
            and not liveness.role_alive(conn, "master-combine"):
        return replace(record, waiting=NO_COMBINER)
    return record


def raise_for_state(record: JobRecord) -> None:
    """JobFailed with the unit's remote traceback if the job did not end done."""
    if record.state is JobState.DONE:
        return
    if record.state is JobState.CANCELLED:
        raise JobFailed(f"job {record.id} was cancelled")
    if record.state is JobState.FAILED:
        raise JobFailed(format_error(record))
    raise JobFailed(f"job {record.id} is {record.state.value}, not done")


def format_error(record: JobRecord) -> str:
    err = record.error or {}
    where = f"unit {err.get('unit')} on slave {err.get('slave')}" if "unit" in err else "job"
    text = f"job {record.id} failed: {where}: {err.get('message', 'unknown error')}"
    if err.get("traceback"):
        text += "\n\nremote traceback:\n" + err["traceback"].rstrip()
    return text


@dataclass(frozen=True)
class ArrayFile:
    """An array result written to a .npy file on this machine."""

    path: Path
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


# Bytes of a stacked result's blocks fetched per round trip (at least one block): bounds
# the reader's memory to the output plus about this much.
STACK_BATCH_BYTES = 64 * 2**20


def get_result(conn: redis.Redis, job_id: str, out: str | os.PathLike[str] | None = None
               ) -> Any:
    """The result of a done job (JobFailed if it failed or was cancelled).

    With ``out``, an array result is written to that .npy file instead (a stacked result
    block by block, never whole in memory) and an ``ArrayFile`` is returned."""
    record = get_record(conn, job_id)
    raise_for_state(record)
    base = keys.job_result(job_id)
    meta = store.read_meta(conn, base)
    if meta["type"] == "stack":
        dtype, shape = np.dtype(meta["dtype"]), tuple(meta["shape"])
        groups = get_kind(record.kind).stack_groups(record.params, int(meta["units"]))
        blocks = _stacked_blocks(conn, job_id, groups, dtype, shape)
        if out is not None:
            return ArrayFile(save_npy_blocks(out, dtype, shape, blocks), dtype, shape)
        return fill_rows(np.empty(shape, dtype=dtype), blocks)
    value = codec.decode(store.get_blob(conn, base))
    if out is not None and isinstance(value, np.ndarray):
        return ArrayFile(save_npy(out, value), value.dtype, value.shape)
    return value


def _stacked_blocks(conn: redis.Redis, job_id: str, groups: list[list[int]],
                    dtype: np.dtype[Any], shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """The row blocks of a stacked result in order, each its group's partials side by side
    (one partial, or the tiles of a tiled matmul), checked against the result's layout."""
    per_group = dtype.itemsize * math.prod(shape) / max(1, len(groups))
    step = max(1, int(STACK_BATCH_BYTES // max(1.0, per_group)))
    rows = 0
    for start in range(0, len(groups), step):
        batch = groups[start:start + step]
        names = [str(u) for g in batch for u in g]
        raws = iter(conn.hmget(keys.partials(job_id), names))
        for group in batch:
            tiles = []
            for unit in group:
                raw = next(raws)
                if raw is None:
                    raise NoSuchJob(f"job {job_id}: block {unit} of its result is gone "
                                    "(expired?)")
                tile = codec.decode(raw)
                if not isinstance(tile, np.ndarray) or tile.dtype != dtype \
                        or tile.ndim != len(shape):
                    raise DecodeError(f"job {job_id}: block {unit} does not fit a {dtype} "
                                      f"result of shape {shape}")
                tiles.append(tile)
            block = tiles[0] if len(tiles) == 1 else np.hstack(tiles)
            if block.shape[1:] != shape[1:]:
                raise DecodeError(f"job {job_id}: row block of units {group} has shape "
                                  f"{block.shape}, not rows of {shape}")
            rows += len(block)
            yield block
    if rows != shape[0]:
        raise DecodeError(f"job {job_id}: result blocks hold {rows} rows, expected {shape[0]}")


def end_job(conn: redis.Redis, job_id: str, state: JobState,
            error: dict[str, Any] | None = None, ttl: int = 86400) -> bool:
    """Move an unfinished job to failed/cancelled; True if this call ended it."""
    ended = conn.eval(END_JOB, 4, keys.job(job_id), keys.ended(job_id), keys.UNFINISHED,
                      keys.GRAPHS, state.value, json.dumps(error) if error else "", job_id)
    if ended:
        drop_units(conn, job_id)
        release(conn, job_id, ttl)
        events.emit(conn, events.JOB_FAILED if state is JobState.FAILED
                    else events.JOB_CANCELLED, job=job_id,
                    error=(error or {}).get("message"))
    return bool(ended)


def drop_units(conn: redis.Redis, job_id: str) -> None:
    """An ended job's units: stop the running ones (their workers are told at once) and
    take every one off the slave holding it (queued RQ jobs are skipped when they come up)."""
    stop_job(conn, job_id)  # (first: it finds the workers through the running entries)
    pipe = conn.pipeline(transaction=False)
    for index, raw in conn.hgetall(keys.units(job_id)).items():
        member = keys.unit_member(job_id, int(index))
        pipe.srem(keys.slave_units(UnitRecord.decode(raw).slave), member)
        pipe.hdel(keys.RUNNING, member)
    pipe.execute()


def forget(conn: redis.Redis, job_id: str) -> None:
    """Delete an ended job now (record, result, counters) instead of at its expiry;
    refused while it runs (cancel it first)."""
    record = get_record(conn, job_id)
    if not record.state.terminal:
        raise InputError(f"job {job_id} is {record.state.value}; cancel it first "
                         f"(rqcluster cancel {job_id})")
    base = keys.job_result(job_id)
    meta = conn.get(base)
    doomed = [keys.job(job_id), keys.slave_counts(job_id), keys.attempts(job_id),
              keys.ended(job_id), keys.partials(job_id)]
    stacked = meta is not None and json.loads(meta).get("type") == "stack"
    doomed += [base] if stacked else store.keys_of(conn, base)  # (stacked: the partials)
    pipe = conn.pipeline(transaction=True)
    pipe.delete(*doomed)
    pipe.zrem(keys.JOBS_INDEX, job_id)
    pipe.zrem(keys.UNFINISHED, job_id)
    pipe.execute()


def prune_index(conn: redis.Redis, older_than: float, batch: int = 500) -> int:
    """Drop index entries of jobs submitted before ``older_than`` whose records expired
    (the index would otherwise grow with the cluster's history); returns how many."""
    ids = conn.zrangebyscore(keys.JOBS_INDEX, "-inf", older_than, start=0, num=batch)
    if not ids:
        return 0
    pipe = conn.pipeline(transaction=False)
    for job_id in ids:
        pipe.exists(keys.job(job_id.decode()))
    gone = [job_id for job_id, alive in zip(ids, pipe.execute(), strict=True) if not alive]
    if gone:
        conn.zrem(keys.JOBS_INDEX, *gone)
        conn.zrem(keys.UNFINISHED, *gone)
    return len(gone)


def cancel(conn: redis.Redis, job_id: str, ttl: int = 86400) -> bool:
    """Cancel a job; False if it had already ended. Queued units are skipped by slaves;
    running ones are stopped (their workers are told at once)."""
    get_record(conn, job_id)
    return end_job(conn, job_id, JobState.CANCELLED, ttl=ttl)


def release(conn: redis.Redis, job_id: str, ttl: int, pipe: Any = None,
            keep_partials: bool = False) -> None:
    """Free what a finished job no longer needs: delete its inputs, units and partials;
    keep the record, per-slave counts, attempts and result (with ``keep_partials``, the partials are
    the result) for ``ttl`` seconds."""
    record = get_record(conn, job_id)
    doomed = [keys.units(job_id), keys.folded(job_id), keys.deps(job_id),
              keys.dependents(job_id), keys.ready(job_id), keys.scheduler_state(job_id)]
    kept = [keys.job(job_id), keys.slave_counts(job_id), keys.attempts(job_id),
            keys.ended(job_id)]
    (kept if keep_partials else doomed).append(keys.partials(job_id))
    for name in record.inputs:
        doomed += store.keys_of(conn, keys.job_input(job_id, name))
    p = pipe if pipe is not None else conn.pipeline(transaction=False)
    p.delete(*doomed)
    p.srem(keys.COMBINE_READY, job_id)
    for key in kept:
        p.expire(key, ttl)
    if pipe is None:
        p.execute()
