"""The run loop: systems started once per run, workloads measured alternating systems.

A workload module (``benchmarks/workloads/*.py``) defines ``NAME``, ``TITLE``, ``SIZE``
(what the work size counts), ``sizes(quick)``, ``prepare(ctx, size)`` (untimed set-up,
e.g. writing .npy files) and ``runners(ctx)``: system label -> ``run(size, state)``, which
does the whole job and returns its answer (checked against the reference system's). The
loop times each ``run`` with ``time.perf_counter`` around the call only.
"""

from __future__ import annotations

import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import systems

Runner = Callable[[int, Any], Any]


@dataclass
class Measurement:
    """Every timing of one (workload, size, system), and what the runs returned."""

    workload: str
    size: int
    system: str
    times: list[float] = field(default_factory=list)
    answer: Any = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "size": self.size, "system": self.system,
                "times": self.times, "median": self.median, "error": self.error,
                "answer": _jsonable(self.answer), **self.extra}


def _jsonable(value: Any) -> Any:
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return repr(value)[:80]


class Context:
    """What a run shares: its scratch directory, its options, the running systems."""

    def __init__(self, workdir: Path, quick: bool, wanted: set[str] | None,
                 say: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.quick = quick
        self.wanted = wanted  # None: every system available
        self.say = say
        self.notes: dict[str, str] = {}
        self._running: dict[str, Any] = {}

    def wants(self, system: str) -> bool:
        return self.wanted is None or system.split("-")[0] in self.wanted

    def system(self, key: str, make: Callable[[], Any],
               available: Callable[[], str | None] | None = None) -> Any | None:
        """The running system ``key``, started on first use; None (with a note) if it is
        not wanted, not installed, or failed to start."""
        if key in self._running:
            return self._running[key]
        if not self.wants(key):
            return None
        why = available() if available is not None else None
        if why is None:
            try:
                started = time.perf_counter()
                instance = make()
                instance.start()
                self.say(f"  started {key} in {time.perf_counter() - started:.1f} s")
                self._running[key] = instance
                return instance
            except Exception as e:
                why = f"failed to start: {type(e).__name__}: {e}"
                traceback.print_exc()
        self.notes.setdefault(key, why)
        self.say(f"  skipping {key}: {why}")
        return None

    def rqcluster(self, slaves: int = 2) -> systems.RqclusterSystem | None:
        return self.system(f"rqcluster-{slaves}",
                           lambda: systems.RqclusterSystem(self.workdir, slaves))

    def dask(self, workers: int = 2, threads: int = 1) -> systems.DaskSystem | None:
        return self.system(f"dask-{workers}x{threads}",
                           lambda: systems.DaskSystem(workers, threads),
                           systems.DaskSystem.available)

    def rq(self, workers: int = 2) -> systems.RqSystem | None:
        return self.system(f"rq-{workers}", lambda: systems.RqSystem(self.workdir, workers),
                           systems.RqSystem.available)

    def celery(self, workers: int = 2, threads: int = 1) -> systems.CelerySystem | None:
        return self.system(f"celery-{workers}x{threads}",
                           lambda: systems.CelerySystem(self.workdir, workers, threads),
                           systems.CelerySystem.available)

    def stop(self, prefix: str = "") -> None:
        """Stop the running systems whose key starts with ``prefix`` (all by default)."""
        for key in [k for k in self._running if k.startswith(prefix)]:
            try:
                self._running.pop(key).stop()
            except Exception:
                traceback.print_exc()


def measure(ctx: Context, workload: ModuleType, repeat: int) -> list[Measurement]:
    """Every size of one workload: ``repeat`` rounds, each running every system once, the
    order rotated each round so no system always runs first (or right after another)."""
    out: list[Measurement] = []
    runners: dict[str, Runner] = workload.runners(ctx)
    reference = next(iter(runners), None)
    for size in workload.sizes(ctx.quick):
        state = workload.prepare(ctx, size)
        found = {name: Measurement(workload.NAME, size, name) for name in runners}
        order = list(runners)
        for rep in range(repeat):
            k = rep % len(order)
            for name in order[k:] + order[:k]:
                m = found[name]
                if m.error is not None:
                    continue
                try:
                    started = time.perf_counter()
                    answer = runners[name](size, state)
                    m.times.append(time.perf_counter() - started)
                    m.answer = answer
                except Exception as e:
                    m.error = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
        ref = found.get(reference) if reference else None
        for m in found.values():
            if ref is not None and m is not ref and m.error is None and \
                    hasattr(workload, "same") and not workload.same(ref.answer, m.answer):
                m.error = f"wrong answer {m.answer!r} (reference {ref.answer!r})"
            _say_size(ctx, m)
        out += found.values()
        if hasattr(workload, "cleanup"):
            workload.cleanup(state)
    return out


def _say_size(ctx: Context, m: Measurement) -> None:
    if m.error:
        ctx.say(f"  {m.workload:<10} {m.size:>11,} {m.system:<16} ERROR {m.error}")
    else:
        times = " ".join(f"{t:.3f}" for t in m.times)
        ctx.say(f"  {m.workload:<10} {m.size:>11,} {m.system:<16} median {m.median:8.3f} s"
                f"   ({times})")
