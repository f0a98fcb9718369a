"""A rolling two-stage graph: N source units, N units each squaring one source's result
(unit i of the second stage waits for unit i of the first only), and one unit summing
them: what a multi-stage job costs per unit, coordination included.

rqcluster runs it as a ``graph`` job (readiness decided by the completion script, units
placed by master-assign's coordinator as they become ready); Dask runs the same graph as
futures (``client.submit`` with futures as arguments), its scheduler doing the same job.
"""

from __future__ import annotations

from typing import Any

from benchmarks.core import Context, Runner

NAME = "graph"
TITLE = "rolling 2-stage graph of 2N+1 units, submit -> result"
SIZE = "N"


def sizes(quick: bool) -> list[int]:
    return [20] if quick else [200, 1000]


def prepare(ctx: Context, n: int) -> int:
    return sum(i * i for i in range(n))


def same(a: Any, b: Any) -> bool:
    return bool(a == b)


def runners(ctx: Context) -> dict[str, Runner]:
    from benchmarks.peer_tasks import add_all, ident, square
    out: dict[str, Runner] = {}
    if (rqc := ctx.rqcluster()) is not None:
        def rqcluster_run(n: int, _: int) -> int:
            from rqcluster import Graph
            g = Graph()
            g.stage("source", ident, args=[[i] for i in range(n)])
            squares = g.stage("square", square, after=["source[i]"])
            g.stage("sum", add_all, after=[squares])
            return int(rqc.api.submit("graph", graph=g).result(timeout=3600))
        out["rqcluster"] = rqcluster_run
    if (dask := ctx.dask()) is not None:
        def dask_run(n: int, _: int) -> int:
            client = dask.client
            sources = [client.submit(ident, i, pure=False) for i in range(n)]
            squares = [client.submit(square, f, pure=False) for f in sources]
            return int(client.submit(add_all, *squares, pure=False).result())
        out["dask"] = dask_run
    return out
