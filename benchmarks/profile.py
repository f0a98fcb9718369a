"""Profile study: where a unit's time goes, and how many Redis commands it costs.

A broker and a master run as usual; the one slave of the config, ``p1``, is not started.
A heartbeat written here makes ``p1`` live, so a job of N one-sample units is placed on
its queue; then three runs drain N units each, every one on a fresh job:

1. the real slave, ``SlaveWorker(...).work(burst=True)`` in a child, under cProfile:
   units/s of one slave, and the top functions;
2. the same without cProfile, with Redis ``INFO commandstats`` deltas: commands per unit,
   by command, for the slave's part and for the whole pipeline (place + run + combine);
3. rqcluster's own unit step with RQ taken out: a child calling
   ``rqcluster.execute.execute_unit`` for each unit in a loop (what a slave costs if units
   were taken without RQ's per-job bookkeeping; a throwaway prototype, not a code path).
"""

from __future__ import annotations

import argparse
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.core import Context
from benchmarks.systems import child_env, stop_procs
from rqcluster import keys, liveness
from rqcluster.api import Cluster
from rqcluster.broker import Broker, die_with_parent, free_port
from rqcluster.config import load_config

SLAVE = "p1"

WORKER = """
import cProfile, sys, time
from rqcluster.config import load_config
from rqcluster.connection import connect
from rqcluster import keys
from workers.slave import SlaveWorker
cfg = load_config(sys.argv[1])
w = SlaveWorker([keys.slave_queue(sys.argv[2])], connection=connect(cfg.redis))
t = time.perf_counter()
if sys.argv[3] == '-':
    w.work(burst=True, logging_level='INFO')
else:
    cProfile.run('w.work(burst=True, logging_level="INFO")', sys.argv[3])
print('SECONDS', time.perf_counter() - t)
"""

BARE = """
import sys, time
from rqcluster.config import load_config
from rqcluster.connection import connect
from rqcluster.execute import execute_unit
cfg = load_config(sys.argv[1])
conn = connect(cfg.redis)
job, n = sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
for i in range(n):
    execute_unit(conn, job, i, sys.argv[4])
print('SECONDS', time.perf_counter() - t)
"""


def _stats(conn: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in conn.info("commandstats").items()}


def _delta(after: dict[str, int], before: dict[str, int], units: int) -> dict[str, float]:
    out = {k: (v - before.get(k, 0)) / units for k, v in after.items()
           if v - before.get(k, 0) > 0 and k not in ("info", "config|resetstat")}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _seconds(output: str) -> float:
    for line in output.splitlines():
        if line.startswith("SECONDS"):
            return float(line.split()[1])
    raise RuntimeError(f"child failed:\n{output[-3000:]}")


def run(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    units = 200 if args.quick else 3000
    workdir = ctx.workdir / "profile"
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(free_port(), workdir / "redis")
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps({
        "master-assign": {"name": "master", "ip": "127.0.0.1"},
        "master-combine": {"name": "master", "ip": "127.0.0.1"},
        "slaves": [{"name": SLAVE, "ip": "127.0.0.1", "performance": 1}],
        "redis": {"url": broker.url}}))
    config = load_config(config_path)
    broker.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (workdir / "master.log").open("ab") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "rqcluster", "-c", str(config_path), "node", "--mode",
                 "assign-reduce", "--name", "master"], stdout=log, stderr=subprocess.STDOUT,
                env=child_env(), start_new_session=True, preexec_fn=die_with_parent))
        api = Cluster(config)
        conn = api.conn
        prof = workdir / "slave.prof"
        result: dict[str, Any] = {"units": units}

        def placed_job(seed: int) -> tuple[Any, dict[str, int]]:
            liveness.beat(conn, SLAVE, 3600)  # a slave that stops deletes its heartbeat
            before = _stats(conn)
            job = api.submit("montecarlo", samples=units, unit_samples=1, seed=seed)
            while job.status().record.state.value != "running":
                time.sleep(0.01)
            return job, before

        def slave(arg: str) -> float:
            out = subprocess.run([sys.executable, "-c", WORKER, str(config_path), SLAVE, arg],
                                 capture_output=True, text=True, cwd=workdir,
                                 env=child_env(RQCLUSTER_CONFIG=str(config_path),
                                               RQCLUSTER_NODE=SLAVE))
            return _seconds(out.stdout + out.stderr)

        job, _ = placed_job(1)
        result["profiled slave units/s"] = units / slave(str(prof))
        job.result(timeout=600)

        job, start = placed_job(2)
        placed = _stats(conn)
        took = slave("-")
        ran = _stats(conn)
        job.result(timeout=600)
        done = _stats(conn)
        result["slave units/s"] = units / took
        result["slave us per unit"] = took / units * 1e6
        result["commands per unit: placing"] = _delta(placed, start, units)
        result["commands per unit: slave"] = _delta(ran, placed, units)
        result["commands per unit: combine + client"] = _delta(done, ran, units)
        result["commands per unit: whole pipeline"] = _delta(done, start, units)

        job, _ = placed_job(3)
        conn.delete(f"rq:queue:{keys.slave_queue(SLAVE)}")  # the bare loop takes them all
        out = subprocess.run([sys.executable, "-c", BARE, str(config_path), job.id,
                              str(units), SLAVE], capture_output=True, text=True,
                             env=child_env(), cwd=workdir)
        bare = _seconds(out.stdout + out.stderr)
        job.result(timeout=600)
        result["bare execute_unit units/s"] = units / bare
        result["bare us per unit"] = bare / units * 1e6
        result["top functions"] = _top(prof)
    finally:
        stop_procs(procs)
        broker.stop()
    result["markdown"] = _markdown(result)
    print(result["markdown"])
    return result


def _top(path: Path, n: int = 18) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, fn), (_, calls, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({fn})", "calls": calls,
                     "tottime": tt, "cumtime": ct, "share": tt / total if total else 0})
    rows.sort(key=lambda r: -r["tottime"])
    return rows[:n]


def _markdown(r: dict[str, Any]) -> str:
    u = r["units"]
    lines = [f"Profile: one slave draining {u:,} one-sample units",
             f"- real slave (RQ SimpleWorker + rqcluster): {r['slave units/s']:,.0f} units/s "
             f"= {r['slave us per unit']:,.0f} us/unit (under cProfile: "
             f"{r['profiled slave units/s']:,.0f} units/s)",
             f"- rqcluster's unit step alone (execute_unit in a loop, no RQ): "
             f"{r['bare execute_unit units/s']:,.0f} units/s = {r['bare us per unit']:,.0f} "
             "us/unit", ""]
    for part in ("placing", "slave", "combine + client", "whole pipeline"):
        cmds = r[f"commands per unit: {part}"]
        lines.append(f"- Redis commands per unit, {part}: {sum(cmds.values()):.1f} ("
                     + ", ".join(f"{k} {v:.2f}" for k, v in list(cmds.items())[:12]) + ")")
    lines += ["", "| function (slave, by own time) | calls | own s | cum s | share |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for f in r["top functions"]:
        lines.append(f"| {f['function']} | {f['calls']:,} | {f['tottime']:.3f} | "
                     f"{f['cumtime']:.3f} | {f['share']:.0%} |")
    return "\n".join(lines)
