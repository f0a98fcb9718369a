"""N units of ``time.sleep(0.01)`` on 32 slaves (ideal: N * 10 ms / 32).

- rqcluster: 32 slave processes; ``@cluster.task`` ``f.map(range(N), reduce="sum")``.
- dask: 8 worker processes x 4 threads (32 slots; 32 processes of Dask's weight would
  not fit beside the others on a small machine), ``client.map`` one task per item.
- rq: 32 ``SimpleWorker`` processes, one job per item.
- celery: 4 workers x 8 threads (thread pool), one task per item.
--quick uses 4 slaves and 40 units.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.core import Context, Runner

NAME = "sleep32"
TITLE = "N x sleep(10 ms) on 32 slaves"
SIZE = "units"


def slaves(quick: bool) -> int:
    return 4 if quick else 32


def sizes(quick: bool) -> list[int]:
    return [40] if quick else [2000]


def prepare(ctx: Context, units: int) -> None:
    return None


def same(a: Any, b: Any) -> bool:
    return bool(a == b)


def sleep10(i: int) -> int:
    time.sleep(0.01)
    return 1


def runners(ctx: Context) -> dict[str, Runner]:
    n = slaves(ctx.quick)
    out: dict[str, Runner] = {}
    if (rqc := ctx.rqcluster(n)) is not None:
        task = rqc.api.task(sleep10)

        def rqcluster_run(units: int, _: None) -> int:
            return int(task.map(range(units), reduce="sum", timeout=3600))
        out["rqcluster"] = rqcluster_run
    if (dask := ctx.dask(max(1, n // 4), 4)) is not None:
        def dask_run(units: int, _: None) -> int:
            from benchmarks.peer_tasks import sleep10 as peer_sleep
            return sum(dask.client.gather(dask.client.map(peer_sleep, range(units),
                                                          pure=False)))
        out["dask"] = dask_run
    if (rq := ctx.rq(n)) is not None:
        def rq_run(units: int, _: None) -> int:
            return sum(rq.run([("benchmarks.peer_tasks.sleep10", (i,)) for i in range(units)]))
        out["rq"] = rq_run
    if (celery := ctx.celery(max(1, n // 8), 8)) is not None:
        def celery_run(units: int, _: None) -> int:
            return sum(celery.run([("sleep10", (i,)) for i in range(units)]))
        out["celery"] = celery_run
    return out


def stop(ctx: Context) -> None:
    """Free the 32-slave systems as soon as this workload is done."""
    n = slaves(ctx.quick)
    for key in (f"rqcluster-{n}", f"dask-{max(1, n // 4)}x4", f"rq-{n}",
                f"celery-{max(1, n // 8)}x8"):
        ctx.stop(key)
