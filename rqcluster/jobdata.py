"""A job's stored inputs, as a slave or combiner sees them (the ``Inputs`` of a kind).

Whole arrays and functions are cached per process for the job (so B of a matmul is
fetched once per slave, not once per unit); row ranges are read fresh, since each unit
wants different rows. At most one whole array per job is kept: a tiled matmul's slave
moves from one panel of B to the next and must not hold them all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import redis

from rqcluster import codec, envelope, keys, store
from rqcluster.functions import open_function

_CACHE_ENTRIES = 6
_cache: OrderedDict[tuple[str, str, str], Any] = OrderedDict()


def _cached(key: tuple[str, str, str], load: Callable[[], Any]) -> Any:
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    value = load()
    _cache[key] = value
    while len(_cache) > _CACHE_ENTRIES:
        _cache.popitem(last=False)
    return value


def forget(job_id: str) -> None:
    """Drop a finished job's cached inputs."""
    for key in [k for k in _cache if k[0] == job_id]:
        del _cache[key]


class JobInputs:
    """Read access to one job's inputs in Redis."""

    def __init__(self, conn: redis.Redis, job_id: str) -> None:
        self.conn = conn
        self.job_id = job_id

    def array(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        base = keys.job_input(self.job_id, name)
        if rows is None:
            key = (self.job_id, "array", name)
            if key not in _cache:
                for other in [k for k in _cache if k[:2] == key[:2]]:
                    del _cache[other]  # dropped before the next one is fetched
            return _cached(key,  # type: ignore[no-any-return]
                           lambda: self._counted(name, store.get_array(self.conn, base)))
        return store.get_array(self.conn, base, rows=rows)

    def _counted(self, name: str, value: Any) -> Any:
        """Count a whole-input fetch in the job record (``fetched:NAME``), so `status`
        shows that B of a matmul was fetched once per slave, not once per unit."""
        self.conn.hincrby(keys.job(self.job_id), f"fetched:{name}", 1)
        return value

    def items(self, name: str, start: int, stop: int) -> list[Any]:
        return store.get_items(self.conn, keys.job_input(self.job_id, name), start, stop)

    def function(self, name: str) -> Callable[..., Any]:
        return _cached((self.job_id, "function", name),  # type: ignore[no-any-return]
                       lambda: self._counted(name, self._open_function(name)))

    def instance(self, name: str) -> Any:
        """One instance per process and job of the class shipped as input ``name`` (a
        graph job's node class)."""
        return _cached((self.job_id, "instance", name), lambda: self.function(name)())

    def results(self, units: Sequence[int]) -> list[Any]:
        """The results of done units of this job (a graph unit's prerequisites)."""
        if not units:
            return []
        raws: list[Any] = self.conn.hmget(keys.partials(self.job_id), [str(u) for u in units])
        missing = [u for u, raw in zip(units, raws, strict=True) if raw is None]
        if missing:
            raise RuntimeError(f"job {self.job_id}: the result of unit {missing[0]} is not "
                               "stored (the job ended?)")
        return [codec.decode(raw) for raw in raws]
    def program(self, name: str) -> bytes:
        """A shipped program file's bytes, once its envelope (bound to this job, input and
        kind) is verified: bytes anyone else wrote are refused before they are written to
        disk or run (``envelope.EnvelopeError``)."""
        return _cached((self.job_id, "program", name),  # type: ignore[no-any-return]
                       lambda: self._open_sealed("program", name))

    def _open_sealed(self, what: str, name: str) -> bytes:
        from rqcluster.enqueue import max_payload_bytes
        from rqcluster.secret import cluster_key
        raw_kind = self.conn.hget(keys.job(self.job_id), "kind")
        ctx = envelope.Context(f"{what}:{name}", self.job_id, "",
                               raw_kind.decode() if isinstance(raw_kind, bytes) else "")
        sealed = store.get_blob(self.conn, keys.job_input(self.job_id, name))
        return envelope.open_(cluster_key(), ctx, sealed, max_payload_bytes())

    def _open_function(self, name: str) -> Callable[..., Any]:
        """Verify the function's envelope (bound to this job, input and kind), and only
        then unpickle it: bytes anyone else wrote are refused unread."""
        from rqcluster.enqueue import max_payload_bytes
        from rqcluster.secret import cluster_key
        raw_kind = self.conn.hget(keys.job(self.job_id), "kind")
        ctx = envelope.Context(f"function:{name}", self.job_id, "",
                               raw_kind.decode() if isinstance(raw_kind, bytes) else "")
        sealed = store.get_blob(self.conn, keys.job_input(self.job_id, name))
        return open_function(cluster_key(), ctx, sealed, max_payload_bytes())
