"""Medians, ratios, the issue's targets (PASS/MISS), results.json and the plot."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.core import Measurement

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
             "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def environment() -> dict[str, Any]:
    """What the figures depend on: machine, versions, and the BLAS variables as set."""
    import numpy as np
    import redis
    import rq
    info: dict[str, Any] = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "machine": platform.machine(), "numpy": np.__version__, "redis-py": redis.__version__,
        "rq": rq.__version__, "load average": os.getloadavg(),
        "blas env": {v: os.environ[v] for v in BLAS_VARS if v in os.environ},
    }
    try:
        import dask
        info["dask"] = dask.__version__
    except ImportError:
        pass
    return info


@dataclass(frozen=True)
class Target:
    """One line of issue 6's targets: a ratio (or rate) at the workload's largest size."""

    workload: str
    text: str
    check: Callable[[dict[str, float], int], tuple[float | None, bool | None]]


def _ratio(a: str, b: str, limit: float) -> Callable[[dict[str, float], int],
                                                      tuple[float | None, bool | None]]:
    def check(med: dict[str, float], size: int) -> tuple[float | None, bool | None]:
        if a not in med or b not in med:
            return None, None
        r = med[a] / med[b]
        return r, r <= limit
    return check


def _best_peer(limit: float) -> Callable[[dict[str, float], int],
                                         tuple[float | None, bool | None]]:
    def check(med: dict[str, float], size: int) -> tuple[float | None, bool | None]:
        peers = [t for s, t in med.items() if s in ("dask", "rq", "celery")]
        if "rqcluster" not in med or not peers:
            return None, None
        r = med["rqcluster"] / min(peers)
        return r, r <= limit
    return check


def _rate(minimum: float) -> Callable[[dict[str, float], int],
                                      tuple[float | None, bool | None]]:
    def check(med: dict[str, float], size: int) -> tuple[float | None, bool | None]:
        if "rqcluster" not in med:
            return None, None
        rate = size / med["rqcluster"]
        return rate, rate >= minimum
    return check


TARGETS = [
    Target("matmul", "rqcluster / numpy <= 1.25", _ratio("rqcluster", "numpy", 1.25)),
    Target("matmul", "rqcluster / dask <= 0.4", _ratio("rqcluster", "dask", 0.4)),
    Target("montecarlo", "rqcluster / numpy <= 0.55", _ratio("rqcluster", "numpy", 0.55)),
    Target("montecarlo", "rqcluster / dask <= 0.6", _ratio("rqcluster", "dask", 0.6)),
    Target("noop", "rqcluster units/s >= 1300", _rate(1300)),
    Target("noop", "rqcluster / rq <= 0.4 (2.5x plain RQ)", _ratio("rqcluster", "rq", 0.4)),
    Target("map", "rqcluster / best peer <= 0.5", _best_peer(0.5)),
    Target("sleep32", "rqcluster / best peer <= 0.4 (2.5x faster)", _best_peer(0.4)),
]


def medians(results: list[Measurement], workload: str) -> tuple[int | None, dict[str, float]]:
    """The largest size a workload ran at, and each system's median there."""
    sized = [m for m in results if m.workload == workload and m.median is not None]
    if not sized:
        return None, {}
    size = max(m.size for m in sized)
    return size, {m.system: m.median for m in sized if m.size == size}  # type: ignore[misc]


def evaluate(results: list[Measurement]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        size, med = medians(results, t.workload)
        value, ok = t.check(med, size or 0) if size else (None, None)
        out.append({"workload": t.workload, "size": size, "target": t.text, "value": value,
                    "verdict": "n/a" if ok is None else ("PASS" if ok else "MISS")})
    return out


def table(results: list[Measurement], titles: dict[str, str]) -> str:
    """A markdown table: one row per (workload, size), one column per system, medians."""
    systems = list(dict.fromkeys(m.system for m in results))
    lines = ["| workload | size | " + " | ".join(systems) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in systems) + " |"]
    keys = list(dict.fromkeys((m.workload, m.size) for m in results))
    for workload, size in keys:
        cells = []
        for s in systems:
            m = next((m for m in results if (m.workload, m.size, m.system) ==
                      (workload, size, s)), None)
            if m is None:
                cells.append("")
            elif m.error:
                cells.append("error")
            else:
                cells.append(f"{m.median:.3f} s")
        lines.append(f"| {titles.get(workload, workload)} | {size:,} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def targets_table(verdicts: list[dict[str, Any]]) -> str:
    lines = ["| workload | size | target | measured | verdict |",
             "| --- | ---: | --- | ---: | --- |"]
    for v in verdicts:
        value = "" if v["value"] is None else f"{v['value']:.3g}"
        size = "" if v["size"] is None else f"{v['size']:,}"
        lines.append(f"| {v['workload']} | {size} | {v['target']} | {value} | {v['verdict']} |")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str))


# One colour per system in every panel.
COLORS = {"rqcluster": "tab:blue", "numpy": "tab:gray", "python": "tab:gray",
          "dask": "tab:orange", "rq": "tab:red", "celery": "tab:green"}


def plot(results: list[Measurement], titles: dict[str, str], sizes: dict[str, str],
         path: Path) -> Path | None:
    """Time vs work size, one panel per workload, one line per system (log-log)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    workloads = list(dict.fromkeys(m.workload for m in results))
    if not workloads:
        return None
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.8),
                             squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        for system in dict.fromkeys(m.system for m in results if m.workload == w):
            pts = sorted((m.size, m.median) for m in results
                         if m.workload == w and m.system == system and m.median is not None)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=system,
                        color=COLORS.get(system))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(titles.get(w, w), fontsize=9)
        ax.set_xlabel(sizes.get(w, "size"))
        ax.set_ylabel("seconds (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
