"""map x*x+1 over N ints, then sum.

- rqcluster: ``@cluster.task`` then ``f.map(range(N), reduce="sum")`` (items batched into
  units automatically, each unit returning its partial sum).
- python: ``sum(x * x + 1 for x in range(N))`` in this process.
- peers, the way each is used well for small items: 100 chunks, each returning a partial
  sum (Dask ``client.map``, RQ ``enqueue_many``, Celery ``group``); one task per item is
  hundreds of times slower on every peer (issue 6's table).
"""

from __future__ import annotations

from typing import Any

from benchmarks.core import Context, Runner
from benchmarks.peer_tasks import chunk_sum

NAME = "map"
TITLE = "map x*x+1 over N ints, then sum"
SIZE = "items"
CHUNKS = 100


def sizes(quick: bool) -> list[int]:
    return [1000] if quick else [10_000, 100_000]


def prepare(ctx: Context, items: int) -> None:
    return None


def same(a: Any, b: Any) -> bool:
    return bool(a == b)


def _chunks(items: int) -> list[tuple[int, int]]:
    k = min(CHUNKS, items)
    return [(items * i // k, items * (i + 1) // k) for i in range(k)]


def square_plus_one(x: int) -> int:
    return x * x + 1


def runners(ctx: Context) -> dict[str, Runner]:
    out: dict[str, Runner] = {}

    def python_run(items: int, _: None) -> int:
        return sum(x * x + 1 for x in range(items))
    out["python"] = python_run

    if (rqc := ctx.rqcluster()) is not None:
        task = rqc.api.task(square_plus_one)

        def rqcluster_run(items: int, _: None) -> int:
            return int(task.map(range(items), reduce="sum", timeout=3600))
        out["rqcluster"] = rqcluster_run
    if (dask := ctx.dask()) is not None:
        def dask_run(items: int, _: None) -> int:
            lo, hi = zip(*_chunks(items), strict=True)
            return sum(dask.client.gather(dask.client.map(chunk_sum, lo, hi, pure=False)))
        out["dask"] = dask_run
    if (rq := ctx.rq()) is not None:
        def rq_run(items: int, _: None) -> int:
            return sum(rq.run([("benchmarks.peer_tasks.chunk_sum", c) for c in _chunks(items)]))
        out["rq"] = rq_run
    if (celery := ctx.celery()) is not None:
        def celery_run(items: int, _: None) -> int:
            return sum(celery.run([("chunk_sum", c) for c in _chunks(items)]))
        out["celery"] = celery_run
    return out
