"""Memory study: matmul n x n float64 (default 8192: 512 MiB per array) on a fresh cluster;
the peak RSS of every rqcluster process against the largest array it must hold.

The client is a child process using the Python API (``submit("matmul", a=A.npy,
b=B.npy, out=C.npy).result()``); its peak comes from the kernel (``ru_maxrss``; it counts
the pages of the memory-mapped .npy files too, so its anonymous peak is polled
separately). ``--memory-budget MiB`` sets the cluster's ``memory-budget`` (B over half of
it is multiplied as 2-D tiles). Nodes' peaks are their VmHWM at
the end (a fresh cluster, so the peak is this job's). redis-server holds A, B and C by
design (every byte lives in Redis), so it is compared with their sum.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from benchmarks.core import Context
from benchmarks.procmem import MiB, run_measured, status_fields
from benchmarks.systems import RqclusterSystem, child_env

LIMIT = 1.5

CLIENT = """
import sys
from pathlib import Path
from rqcluster.api import Cluster
d = Path(sys.argv[2])
job = Cluster.from_config(sys.argv[1]).submit("matmul", a=d / "A.npy", b=d / "B.npy",
                                              out=d / "C.npy")
job.result(timeout=3600)
print("PANELS", len(job.status().record.params.get("panels") or []))
"""


def _write_random(path: Any, n: int, seed: int) -> None:
    """An n x n float64 .npy written in row blocks (this process never holds it whole)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
    rng = np.random.default_rng(seed)
    step = max(1, (32 * MiB) // (8 * n))
    for lo in range(0, n, step):
        out[lo:lo + step] = rng.random((min(step, n - lo), n))
    out.flush()
    del out


def run(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    n = args.memory_n or (512 if args.quick else 8192)
    d = ctx.workdir / f"memory-{n}"
    d.mkdir(parents=True, exist_ok=True)
    _write_random(d / "A.npy", n, 1)
    _write_random(d / "B.npy", n, 2)
    array = n * n * 8
    options = {} if args.memory_budget is None else {"memory-budget": args.memory_budget}
    system = RqclusterSystem(ctx.workdir / "memory", slaves=2, options=options)
    system.start()
    try:
        base = {name: status_fields(pid).get("VmHWM", 0) for name, pid in system.pids().items()}
        started = time.perf_counter()
        status, client_peak, client_anon, output = run_measured(
            [sys.executable, "-c", CLIENT, str(system.local.config_path), str(d)], child_env())
        took = time.perf_counter() - started
        if status != 0:
            raise RuntimeError(f"matmul {n} failed (exit {status}):\n{output[-2000:]}")
        peaks = {name: status_fields(pid) for name, pid in system.pids().items()}
        panels = output.split("PANELS")[-1].strip()
        used = system.conn.info("memory")
    finally:
        system.stop()
    ok = _spot_check(d, n)
    rows: list[dict[str, Any]] = [
        {"process": "client (API: submit + result(out=C.npy))", "peak": client_peak,
         "anon": client_anon, "holds": array, "what": "largest array (C, or A / B)"}]
    for name, f in peaks.items():
        holds, what = (3 * array, "A + B + C") if name == "redis-server" else \
            _slave_holds(array, panels) if name.startswith("s") else (array, "-")
        rows.append({"process": name, "peak": f.get("VmHWM", 0), "anon": f.get("RssAnon", 0),
                     "holds": holds, "what": what, "start peak": base.get(name, 0)})
    for r in rows:
        r["ratio"] = r["peak"] / r["holds"]
        r["verdict"] = "PASS" if r["ratio"] < LIMIT else "MISS"
    for d_ in (d / "A.npy", d / "B.npy", d / "C.npy"):
        d_.unlink(missing_ok=True)
    result = {"n": n, "memory-budget MiB": args.memory_budget, "panels": panels,
              "array bytes": array, "seconds": took, "correct rows": ok, "rows": rows,
              "redis used_memory_peak": used.get("used_memory_peak")}
    result["markdown"] = _markdown(result)
    print(result["markdown"])
    return result


def _slave_holds(array: int, panels: str) -> tuple[int, str]:
    if panels in ("", "0"):
        return array, "B (whole, for the job)"
    return -(-array // int(panels)), f"one of {panels} panels of B"


def _spot_check(d: Any, n: int) -> bool:
    a = np.load(d / "A.npy", mmap_mode="r")
    b = np.load(d / "B.npy", mmap_mode="r")
    c = np.load(d / "C.npy", mmap_mode="r")
    rows = sorted({0, n // 3, n - 1})
    return bool(np.allclose(c[rows], np.asarray(a[rows]) @ b, rtol=1e-12, atol=0))


def _markdown(r: dict[str, Any]) -> str:
    lines = [f"Memory: matmul {r['n']}² float64 ({r['array bytes'] / MiB:.0f} MiB per array), "
             f"memory-budget {r['memory-budget MiB'] or 'default'} MiB, {r['panels']} panels, "
             f"{r['seconds']:.1f} s, result rows checked: {'OK' if r['correct rows'] else 'WRONG'}",
             "", "| process | peak RSS | anon RSS (client: peak; nodes: at end) | must hold "
             "| peak / held | < 1.5x |",
             "| --- | ---: | ---: | --- | ---: | --- |"]
    for row in r["rows"]:
        lines.append(f"| {row['process']} | {row['peak'] / MiB:,.0f} MiB | "
                     f"{row['anon'] / MiB:,.0f} MiB | {row['what']} | {row['ratio']:.2f} | "
                     f"{row['verdict']} |")
    return "\n".join(lines)
