"""TaskSprint's Monte Carlo example (seeds/004), on rqcluster: 11 sampling units and a
merge unit that takes all their results, written as a node class and a scheduler.

    python examples/montecarlo.py -c config/local.json
"""

from __future__ import annotations

import numpy as np
from _common import arguments, cluster, report

import rqcluster


class MonteCarloNode:
    """The tasks: what a unit runs (one instance per slave)."""

    samples = 1_000_000

    def montecarlo(self) -> dict[str, int]:
        rng = rqcluster.unit_rng()  # seeded from the job seed and this unit: reproducible
        x, y = rng.random(self.samples), rng.random(self.samples)
        return {"inside": int(np.count_nonzero(x * x + y * y < 1)), "total": self.samples}

    def merge(self, *results: dict[str, int]) -> float:
        inside = sum(r["inside"] for r in results)
        total = sum(r["total"] for r in results)
        return 4 * inside / total


class MonteCarloScheduler(rqcluster.Scheduler):
    """The schedule: runs on master-assign, reacting to events."""

    def init(self, seed: int) -> None:
        alltasks = [self.start_task(name="montecarlo") for _ in range(11)]
        self.final = self.start_task(name="merge", pretasks=alltasks)

    def slave_joined(self, name: str) -> None:
        print(f"Somebody joined! {name}")

    def slave_died(self, name: str) -> None:
        print(f"Somebody died :( {name}")

    def unit_done(self, unit: int, value: object) -> None:
        if unit == self.final:
            self.finish(value)
        print(f"Task {unit} is done. Result: {value}")


def main() -> None:
    args = arguments(__doc__.splitlines()[0],
                     seed=(int, None, "job seed (default: random)"))
    job = cluster(args).submit("graph", graph=rqcluster.Graph(node=MonteCarloNode),
                               scheduler=MonteCarloScheduler, seed=args.seed)
    report(job, job.result(timeout=args.timeout), "pi")


if __name__ == "__main__":
    main()
