"""``python -m benchmarks``: run every workload (and the memory, scale and profile studies)
on rqcluster, numpy and the peers; print medians, ratios and the targets' verdicts; write
``results.json``, ``results.md`` and ``time_vs_size.png`` to ``--out``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import core, memory, profile, report, scale
from benchmarks.workloads import ALL

STUDIES = {"memory": memory, "scale": scale, "profile": profile}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smallest sizes (seconds, not minutes): checks the harness works")
    p.add_argument("--repeat", type=int, default=3, help="repetitions per size (default 3)")
    p.add_argument("--only", default="",
                   help="comma-separated subset of: " + ", ".join([*ALL, *STUDIES]))
    p.add_argument("--systems", default="",
                   help="comma-separated subset of: rqcluster, numpy, python, dask, rq, celery")
    p.add_argument("--memory-n", type=int, default=None,
                   help="matmul size of the memory study (default 8192; 512 with --quick)")
    p.add_argument("--memory-budget", type=int, default=None, metavar="MiB",
                   help="the memory study's cluster memory-budget (default: the config's "
                        "default; below 2x B's size, B is multiplied as 2-D tiles)")
    p.add_argument("--scale-max", type=int, default=10_000,
                   help="largest job of the scale study, in units (default 10,000; 100,000 "
                        "takes minutes)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="directory for results.json, results.md, time_vs_size.png")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    chosen = [s for s in args.only.split(",") if s] or [*ALL, *STUDIES]
    unknown = [c for c in chosen if c not in ALL and c not in STUDIES]
    if unknown:
        print(f"error: unknown workload {unknown[0]!r}", file=sys.stderr)
        return 2
    wanted = {s for s in args.systems.split(",") if s} or None  # numpy/python always run
    args.out.mkdir(parents=True, exist_ok=True)
    env = report.environment()
    print(f"environment: {env}")
    if env["blas env"]:
        print("note: BLAS variables set here apply to numpy, rqcluster's slaves and the peers "
              "alike: " + ", ".join(f"{k}={v}" for k, v in env["blas env"].items()))
    started = time.time()
    payload: dict[str, Any] = {"environment": env, "quick": args.quick,
                               "repeat": args.repeat, "started": started}
    with tempfile.TemporaryDirectory(prefix="rqcluster-bench-") as tmp:
        ctx = core.Context(Path(tmp), args.quick, wanted)
        results: list[core.Measurement] = []
        try:
            for name in [c for c in chosen if c in ALL]:
                workload = ALL[name]
                print(f"\n== {workload.TITLE}")
                results += core.measure(ctx, workload, args.repeat)
                if hasattr(workload, "stop"):
                    workload.stop(ctx)
            ctx.stop()
            for name in [c for c in chosen if c in STUDIES]:
                print(f"\n== {name}")
                payload[name] = STUDIES[name].run(ctx, args)
        finally:
            ctx.stop()
    titles = {w.NAME: w.TITLE for w in ALL.values()}
    verdicts = report.evaluate(results)
    payload.update({"results": [m.to_dict() for m in results], "targets": verdicts,
                    "skipped": ctx.notes, "seconds": time.time() - started})
    text = [report.table(results, titles), "", report.targets_table(verdicts)] if results \
        else []
    for name in [c for c in chosen if c in ALL and hasattr(ALL[c], "summary")]:
        extra = ALL[name].summary(results, args.quick)  # a workload's own table
        if extra:
            text += ["", extra]
            payload.setdefault("summaries", {})[name] = extra
    for name in STUDIES:
        if name in payload and payload[name].get("markdown"):
            text += ["", payload[name]["markdown"]]
    if args.quick:
        text.append("\n(--quick: sizes are far below the targets' own; verdicts are only "
                    "indicative)")
    print("\n" + "\n".join(text))
    (args.out / "results.md").write_text("\n".join(text) + "\n")
    report.write_json(args.out / "results.json", payload)
    png = report.plot(results, titles, {w.NAME: w.SIZE for w in ALL.values()},
                      args.out / "time_vs_size.png")
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'results.md'}"
          + (f", {png}" if png else " (no plot)" if results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
