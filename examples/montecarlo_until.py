"""Monte Carlo π that stops as soon as it is precise enough: the scheduler keeps a few
sampling units in flight, folds each result as it arrives, and once the standard error
falls under the target it kills the units still queued or running and finishes.

    python examples/montecarlo_until.py -c config/local.json --target 0.0005
"""

from __future__ import annotations

import math

import numpy as np
from _common import arguments, cluster, report

import rqcluster


class Sampler:
    samples = 2_000_000

    def sample(self) -> dict[str, int]:
        rng = rqcluster.unit_rng()
        inside = 0
        for _ in range(self.samples // 250_000):
            x, y = rng.random(250_000), rng.random(250_000)
            inside += int(np.count_nonzero(x * x + y * y < 1))
        return {"inside": inside, "total": self.samples}


class UntilPrecise(rqcluster.Scheduler):
    target = 0.001       # stop once the standard error of the estimate is below this
    in_flight = 6        # sampling units queued or running at any time
    most = 200           # never start more than this many

    def init(self, seed: int) -> None:
        self.inside = self.total = 0
        self.started = 0
        self.outstanding: set[int] = set()
        for _ in range(self.in_flight):
            self._more()

    def _more(self) -> None:
        if self.started < self.most:
            self.outstanding.add(self.start_unit("sample"))
            self.started += 1

    def unit_done(self, unit: int, value: dict[str, int]) -> None:
        self.outstanding.discard(unit)
        self.inside += value["inside"]
        self.total += value["total"]
        p = self.inside / self.total
        error = 4 * math.sqrt(p * (1 - p) / self.total)
        if error < self.target or (not self.outstanding and self.started >= self.most):
            self.kill(*self.outstanding)
            self.finish({"pi": 4 * p, "standard_error": error, "samples": self.total})
        else:
            self._more()


def main() -> None:
    args = arguments(__doc__.splitlines()[0],
                     target=(float, 0.001, "standard error to reach"),
                     seed=(int, None, "job seed (default: random)"))
    UntilPrecise.target = args.target
    job = cluster(args).submit("graph", graph=rqcluster.Graph(node=Sampler),
                               scheduler=UntilPrecise, seed=args.seed)
    report(job, job.result(timeout=args.timeout), "estimate")


if __name__ == "__main__":
    main()
