"""A longer chaos run than CI's: jobs back to back while slaves, masters and redis-server
are killed at random, each job checked exactly, totals printed at the end.

    .venv/bin/python -m tests.chaos.soak --minutes 10 --seed 7     (or: make soak)

Exits 1 if any job's answer was wrong or any unit was lost or counted twice.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.chaos.conftest import FAST
from tests.chaos.ledger import TALLY, kill_group, ledger
from tests.chaos.test_chaos import EXPECTED, ITEMS, slow_square
from tests.integration.harness import NodeCluster

SLAVES = ("slave1", "slave2", "slave3")


def chaos_step(c: NodeCluster, rng: random.Random) -> str:
    """One random fault, the process restarted after a random pause; what it did."""
    roll = rng.random()
    if roll < 0.7:
        victim = rng.choice(SLAVES)
        kill_group(c.procs[victim])
        time.sleep(rng.uniform(0.0, 2.0))
        c.spawn("slave", victim)
        return f"killed {victim}"
    if roll < 0.9:
        kill_group(c.procs["master"])
        time.sleep(rng.uniform(0.0, 1.0))
        c.spawn("assign-reduce", "master")
        return "killed master"
    c.broker.kill()
    TALLY.kills += 1
    time.sleep(rng.uniform(0.2, 1.0))
    c.broker.start()
    c._conn = None
    return "killed redis-server"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--mean-gap", type=float, default=2.0,
                        help="mean seconds between faults (default 2)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="rqcluster-soak-"))
    # Faults come every few seconds here: a unit may honestly be hit 3 times, which is the
    # poison-unit rule's business (tested on its own), not the soak's.
    c = NodeCluster(workdir, slaves=[(s, 1) for s in SLAVES],
                    options={**FAST, "max-attempts": 20})
    failures = 0
    print(f"soak: seed {args.seed}, {args.minutes:g} min, logs in {workdir}", flush=True)
    try:
        c.start_standard()
        deadline = time.monotonic() + args.minutes * 60
        a = np.arange(240 * 160, dtype=np.int64).reshape(240, 160) % 101 - 50
        b = np.arange(160 * 120, dtype=np.int64).reshape(160, 120) % 83 - 40
        while time.monotonic() < deadline:
            jobs = [c.api.submit("map", function=slow_square, items=range(ITEMS),
                                 reduce="sum"), c.api.submit("matmul", a=a, b=b)]
            while not all(j.status().record.state.terminal for j in jobs):
                time.sleep(rng.expovariate(1 / args.mean_gap))
                print(f"  {chaos_step(c, rng)}", flush=True)
            ok = (jobs[0].result() == EXPECTED
                  and np.array_equal(jobs[1].result(), a @ b))
            entries = [TALLY.add(ledger(c.conn, j.id)) for j in jobs]
            bad = not ok or any(e.lost or e.double_counted for e in entries)
            failures += bad
            print(f"jobs {', '.join(j.id for j in jobs)}: {'WRONG' if bad else 'exact'} "
                  f"({sum(e.runs for e in entries)} runs of {sum(e.units for e in entries)} "
                  "units)", flush=True)
    finally:
        c.stop()
    print(TALLY.summary())
    if failures:
        print(f"soak: {failures} job pair(s) wrong; logs kept in {workdir}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
