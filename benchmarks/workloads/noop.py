"""N no-op units, from submit to every result back: the pipeline's cost per unit.

rqcluster has no "no-op" kind, and ``map`` batches items into a few units, so the nearest
honest equivalent is a ``montecarlo`` job of N units of one sample each
(``samples=N, unit_samples=1``): every unit goes assign -> slave queue -> slave -> results
stream -> combine, and does ~20 us of work (a seeded generator and one draw). The peers
run N calls of an empty function: Dask ``client.map``, RQ ``enqueue_many``, Celery ``group``.
"""

from __future__ import annotations

from typing import Any

from benchmarks.core import Context, Runner

NAME = "noop"
TITLE = "N no-op units, submit -> all results"
SIZE = "units"


def sizes(quick: bool) -> list[int]:
    return [50] if quick else [1000, 5000]


def prepare(ctx: Context, units: int) -> None:
    return None


def same(a: Any, b: Any) -> bool:
    return bool(a == b)


def runners(ctx: Context) -> dict[str, Runner]:
    out: dict[str, Runner] = {}
    if (rqc := ctx.rqcluster()) is not None:
        def rqcluster_run(units: int, _: None) -> int:
            job = rqc.api.submit("montecarlo", samples=units, unit_samples=1, seed=1)
            job.result(timeout=3600)
            return job.status().record.total or 0
        out["rqcluster"] = rqcluster_run
    if (dask := ctx.dask()) is not None:
        def dask_run(units: int, _: None) -> int:
            from benchmarks.peer_tasks import noop
            return len(dask.client.gather(dask.client.map(noop, range(units), pure=False)))
        out["dask"] = dask_run
    if (rq := ctx.rq()) is not None:
        def rq_run(units: int, _: None) -> int:
            return len(rq.run([("benchmarks.peer_tasks.noop", (i,)) for i in range(units)]))
        out["rq"] = rq_run
    if (celery := ctx.celery()) is not None:
        def celery_run(units: int, _: None) -> int:
            return len(celery.run([("noop", (i,)) for i in range(units)]))
        out["celery"] = celery_run
    return out
