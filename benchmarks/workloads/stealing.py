"""Heterogeneous clusters: slaves declared equal, some really slower (issue 8).

Every slave is declared performance 1, but a unit sleeps ``UNIT`` seconds times its
slave's slowness factor (the slave's name is in RQCLUSTER_NODE; a Dask worker's in
``get_worker().name``): with 3 slaves one is 4x slower, with 8 slaves one is 4x and one
2x slower. The job is ``units-per-slave`` (8) one-item units per slave, a ``map`` with
``reduce="sum"``. The ideal is total work / sum of the true speeds; the summary reports
each system's median job time over that ideal.

- ``rqcluster``: stealing on (the default), a cluster of its own per size;
- ``rqcluster-nosteal``: the same cluster with ``options.steal`` false (shares only);
- ``dask``: ``LocalCluster`` with as many single-threaded workers, one task per unit,
  Dask's own work stealing (on by default) deciding where tasks run.

--quick: 3 slaves, 0.02 s units.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from benchmarks import systems
from benchmarks.core import Context, Measurement, Runner

NAME = "stealing"
TITLE = "Heterogeneous cluster, declared equal: job time vs ideal"
SIZE = "slaves"
UNIT = 0.25             # seconds a unit sleeps on a slave of true speed 1
UNITS_PER_SLAVE = 8
SLOW = {3: (4.0,), 8: (4.0, 2.0)}  # slowness factors of the first slaves


def sizes(quick: bool) -> list[int]:
    return [3] if quick else [3, 8]


def unit_seconds(quick: bool) -> float:
    return 0.02 if quick else UNIT


def factors(slaves: int) -> list[float]:
    """Each slave's slowness factor (1 = as declared), in slave order."""
    slow = SLOW.get(slaves, (4.0,))
    return [*slow, *([1.0] * (slaves - len(slow)))]


def ideal(slaves: int, unit: float) -> float:
    """Total work over the sum of the true speeds."""
    work = slaves * UNITS_PER_SLAVE * unit
    return work / sum(1 / f for f in factors(slaves))


def prepare(ctx: Context, slaves: int) -> int:
    """Stop the previous size's systems and start this size's (untimed)."""
    ctx.stop(f"{NAME}-")
    for steal in (True, False):
        if ctx.wants("rqcluster"):
            _rqcluster(ctx, slaves, steal)
    if ctx.wants("dask") and systems.DaskSystem.available() is None:
        _dask(ctx, slaves)
    return slaves * UNITS_PER_SLAVE


def _dask(ctx: Context, slaves: int) -> systems.DaskSystem | None:
    return ctx.system(f"{NAME}-dask-{slaves}", lambda: systems.DaskSystem(slaves, 1))


def same(a: Any, b: Any) -> bool:
    return bool(a == b)


def make_work(unit: float, slow: dict[str, float]) -> Any:
    """The map function shipped to rqcluster's slaves (by value)."""
    def work(i: int) -> int:
        time.sleep(unit * slow.get(os.environ.get("RQCLUSTER_NODE", ""), 1.0))
        return i
    return work


def _rqcluster(ctx: Context, slaves: int, steal: bool) -> systems.RqclusterSystem | None:
    label = "rqcluster" if steal else "rqcluster-nosteal"
    options = {"units-per-slave": UNITS_PER_SLAVE, "steal": steal}
    return ctx.system(f"{NAME}-{label}-{slaves}", lambda: systems.RqclusterSystem(
        ctx.workdir / f"{NAME}-{label}", slaves, options))


def runners(ctx: Context) -> dict[str, Runner]:
    unit = unit_seconds(ctx.quick)
    out: dict[str, Runner] = {}

    def reference(slaves: int, units: int) -> int:
        return sum(range(units))
    out["python"] = reference
    for steal in (True, False):
        def rqcluster_run(slaves: int, units: int, steal: bool = steal) -> int:
            rqc = _rqcluster(ctx, slaves, steal)
            if rqc is None:
                raise RuntimeError("rqcluster did not start")
            slow = {f"s{i + 1}": f for i, f in enumerate(factors(slaves)) if f != 1.0}
            return int(rqc.api.task(make_work(unit, slow)).map(range(units), reduce="sum",
                                                               timeout=3600))
        if ctx.wants("rqcluster"):
            out["rqcluster" if steal else "rqcluster-nosteal"] = rqcluster_run
    if ctx.wants("dask") and systems.DaskSystem.available() is None:
        def dask_run(slaves: int, units: int) -> int:
            from benchmarks.peer_tasks import skewed_sleep
            dask = _dask(ctx, slaves)
            if dask is None:
                raise RuntimeError("dask did not start")
            slow = {i: f for i, f in enumerate(factors(slaves)) if f != 1.0}
            futures = dask.client.map(skewed_sleep, range(units), seconds=unit, factors=slow,
                                      pure=False)
            return sum(dask.client.gather(futures))
        out["dask"] = dask_run
    return out


def stop(ctx: Context) -> None:
    ctx.stop(f"{NAME}-")


def summary(results: list[Measurement], quick: bool) -> str:
    """Markdown: each system's median job time over the ideal, per cluster size."""
    unit = unit_seconds(quick)
    mine = [m for m in results if m.workload == NAME and m.system != "python"]
    if not mine:
        return ""
    names = list(dict.fromkeys(m.system for m in mine))
    lines = [f"| {NAME}: slaves (slowness) | ideal s | "
             + " | ".join(f"{n} s (x ideal)" for n in names) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for slaves in sorted({m.size for m in mine}):
        size = slaves
        best = ideal(slaves, unit)
        cells = []
        for n in names:
            m = next((x for x in mine if x.size == size and x.system == n), None)
            if m is None or m.error or not m.times:
                cells.append("error" if m is not None and m.error else "-")
            else:
                med = statistics.median(m.times)
                cells.append(f"{med:.2f} ({med / best:.2f}x)")
        slow = ", ".join(f"{f:g}x" for f in factors(slaves) if f != 1.0)
        lines.append(f"| {slaves} ({slow} slower) | {best:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
