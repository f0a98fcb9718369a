"""Monte Carlo pi from N samples in 20 tasks, every system drawing the very same points.

Each task draws ``N/20`` points from ``SeedSequence(seed, spawn_key=(i,))`` with
rqcluster's own kernel (``count_inside``), so every system's estimate is equal bit for bit.
numpy draws the same 20 streams one after another in this process.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.core import Context, Runner
from rqcluster.kinds.montecarlo import count_inside

NAME = "montecarlo"
TITLE = "Monte Carlo pi, N samples in 20 tasks"
SIZE = "samples"
TASKS = 20
SEED = 2026


def sizes(quick: bool) -> list[int]:
    return [2_000_000] if quick else [50_000_000, 100_000_000, 200_000_000]


def prepare(ctx: Context, samples: int) -> None:
    return None


def same(a: Any, b: Any) -> bool:
    return bool(a == b)


def _tasks(samples: int) -> list[tuple[int, int, int]]:
    size = samples // TASKS
    return [(size, SEED, i) for i in range(TASKS)]


def runners(ctx: Context) -> dict[str, Runner]:
    out: dict[str, Runner] = {}
    if (rqc := ctx.rqcluster()) is not None:
        def rqcluster_run(samples: int, _: None) -> float:
            return float(rqc.api.submit("montecarlo", samples=samples, seed=SEED,
                                        unit_samples=samples // TASKS).result(timeout=3600))
        out["rqcluster"] = rqcluster_run

    def numpy_run(samples: int, _: None) -> float:
        inside = sum(count_inside(np.random.default_rng(np.random.SeedSequence(
            seed, spawn_key=(i,))), n) for n, seed, i in _tasks(samples))
        return 4.0 * inside / samples
    out["numpy"] = numpy_run

    if (dask := ctx.dask()) is not None:
        def dask_run(samples: int, _: None) -> float:
            from benchmarks.peer_tasks import mc_count
            futures = dask.client.map(mc_count, *zip(*_tasks(samples), strict=True), pure=False)
            return 4.0 * sum(dask.client.gather(futures)) / samples
        out["dask"] = dask_run
    if (rq := ctx.rq()) is not None:
        def rq_run(samples: int, _: None) -> float:
            counts = rq.run([("benchmarks.peer_tasks.mc_count", t) for t in _tasks(samples)])
            return 4.0 * sum(counts) / samples
        out["rq"] = rq_run
    if (celery := ctx.celery()) is not None:
        def celery_run(samples: int, _: None) -> float:
            counts = celery.run([("mc_count", t) for t in _tasks(samples)])
            return 4.0 * sum(counts) / samples
        out["celery"] = celery_run
    return out
