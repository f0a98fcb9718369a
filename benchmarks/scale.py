"""Scale study: does cost grow with the work, not with the cluster's history?

One fresh 2-slave cluster with ``result-ttl`` 2 s. For each job size (10², 10³, 10⁴, 10⁵
units: montecarlo jobs of one-sample units, as in the no-op workload) the time per unit
and Redis's ``used_memory`` before the job, once it is done, and after its record and
result expired (collected). Also counts the keys left behind.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.core import Context
from benchmarks.systems import RqclusterSystem

TTL = 2


def _used(conn: Any) -> int:
    return int(conn.info("memory")["used_memory"])


def run(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    sizes = [100, 300] if args.quick else \
        [u for u in (100, 1000, 10_000, 100_000) if u <= args.scale_max]
    system = RqclusterSystem(ctx.workdir / "scale", slaves=2, options={"result-ttl": TTL})
    system.start()
    rows = []
    try:
        conn = system.conn
        system.api.submit("montecarlo", samples=10, unit_samples=1, seed=0).result(60)
        time.sleep(TTL + 1.5)  # the warm-up job's record and result expire
        baseline = _used(conn)
        baseline_keys = conn.dbsize()
        for units in sizes:
            before = _used(conn)
            started = time.perf_counter()
            job = system.api.submit("montecarlo", samples=units, unit_samples=1, seed=units)
            job.result(timeout=3600)
            took = time.perf_counter() - started
            done = _used(conn)
            time.sleep(TTL + 1.5)
            after = _used(conn)
            rows.append({"units": units, "seconds": took, "us per unit": took / units * 1e6,
                         "used before": before, "used when done": done,
                         "used after expiry": after, "keys after expiry": conn.dbsize(),
                         "leftover keys": sorted(str(k) for k in conn.keys("rqc:*"))[:10]})
            print(f"  {units:>7,} units: {took:7.2f} s, {took / units * 1e6:7.0f} us/unit; "
                  f"used_memory {before:,} -> {done:,} -> {after:,} B, {conn.dbsize()} keys")
    finally:
        system.stop()
    result = {"baseline used_memory": baseline, "baseline keys": baseline_keys, "rows": rows}
    result["markdown"] = _markdown(result)
    return result


def _markdown(r: dict[str, Any]) -> str:
    lines = [f"Scale (montecarlo jobs of one-sample units, 2 slaves; Redis baseline "
             f"{r['baseline used_memory'] / 1024:,.0f} KiB, {r['baseline keys']} keys)", "",
             "| units | seconds | us per unit | used_memory when done | after expiry | "
             "vs baseline | keys |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in r["rows"]:
        lines.append(f"| {row['units']:,} | {row['seconds']:.2f} | {row['us per unit']:,.0f} | "
                     f"{row['used when done'] / 1024:,.0f} KiB | "
                     f"{row['used after expiry'] / 1024:,.0f} KiB | "
                     f"{(row['used after expiry'] - r['baseline used_memory']) / 1024:+,.0f} KiB"
                     f" | {row['keys after expiry']} |")
    return "\n".join(lines)
