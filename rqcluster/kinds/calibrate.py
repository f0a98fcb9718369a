"""``calibrate``: one short, fixed benchmark unit per live slave (`rqcluster calibrate`).

Split gives every slave in the shares exactly one unit; each unit times the same fixed
work (numpy element-wise arithmetic and a plain Python loop, single-threaded, so BLAS
threads and core counts do not enter) and returns the best of a few rounds. The stealer
never moves these units (``steal.PINNED_KINDS``): a unit measures the slave it was
placed on. Combine maps each slave that ran a unit to its seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from rqcluster.errors import InputError
from rqcluster.kinds.base import Inputs, Kind, Prepared, Unit

ROUNDS = 3
ARRAY = 100_000
LOOP = 100_000


def benchmark_seconds(rounds: int = ROUNDS) -> float:
    """Seconds the fixed work takes here, best of ``rounds`` (the least disturbed)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        x = np.arange(ARRAY, dtype=np.float64)
        for _ in range(10):
            x = np.sqrt(x * x + 1.0)
        total = 0
        for i in range(LOOP):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return best


class CalibrateKind(Kind):
    name = "calibrate"
    help = "time a short fixed benchmark unit on every live slave"

    def prepare(self, **params: Any) -> Prepared:
        self.check_params(params, (), ("rounds",))
        rounds = params.get("rounds") or ROUNDS
        if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= 20:
            raise InputError(f"calibrate: rounds must be a whole number from 1 to 20, "
                             f"got {rounds!r}")
        return Prepared(params={"rounds": rounds})

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        return [Unit(i, name, {"slave": name}) for i, name in enumerate(shares)]

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        # The slave that really ran it (a unit moved off a dead slave ran elsewhere).
        ran_on = os.environ.get("RQCLUSTER_NODE") or spec["slave"]
        return {"slave": ran_on, "seconds": benchmark_seconds(params["rounds"])}

    def combine(self, params: Mapping[str, Any], partials: list[Any], inputs: Inputs) -> Any:
        out: dict[str, float] = {}
        for p in partials:
            out[p["slave"]] = min(p["seconds"], out.get(p["slave"], float("inf")))
        return dict(sorted(out.items()))

    def describe(self, params: Mapping[str, Any]) -> str:
        return "calibrate: a fixed benchmark unit on every live slave"
