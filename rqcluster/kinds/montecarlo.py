"""``montecarlo``: estimate π by sampling points in the unit square.

Units have a fixed size (``unit_samples``) that does not depend on the cluster, and unit
i draws from ``SeedSequence(seed).spawn(n)[i]`` (built directly as
``SeedSequence(seed, spawn_key=(i,))``). Partials are integer counts, summed exactly, so
the same seed and sample count give the same estimate bit for bit on any number of
slaves, whichever slave runs which unit, retries included. The seed is the job's seed
(``rqcluster.seeding``): the same number shows in ``status``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from rqcluster import placement, seeding
from rqcluster.errors import InputError
from rqcluster.kinds.base import Inputs, Kind, Prepared, Unit

DEFAULT_UNIT_SAMPLES = 1 << 22        # ~4.2 M points, ~30 ms of one core per unit
MAX_SAMPLES = 10**13                   # days of work on any cluster rqcluster targets
MAX_UNITS = 100_000                    # each unit is an RQ job (~1 KB in Redis while queued)
DRAW = 1 << 16                         # points per numpy call: x and y stay in L2 (1 MiB)


def _count(name: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"montecarlo: {name} must be a whole number, got {value!r}")
    if not minimum <= value <= maximum:
        raise InputError(f"montecarlo: {name} must be between {minimum:,} and {maximum:,}, "
                         f"got {value:,}")
    return int(value)


class MonteCarloKind(Kind):
    name = "montecarlo"
    help = "estimate pi from N random points, reproducibly from a seed"
    seeded = True  # its seed is the job seed

    def prepare(self, **params: Any) -> Prepared:
        self.check_params(params, ("samples",), ("seed", "unit_samples"))
        samples = _count("samples", params["samples"], 1, MAX_SAMPLES)
        given = params.get("unit_samples")
        unit = DEFAULT_UNIT_SAMPLES if given is None else _count("unit_samples", given, 1,
                                                                  MAX_SAMPLES)
        if math.ceil(samples / unit) > MAX_UNITS:
            raise InputError(f"montecarlo: {samples:,} samples in units of {unit:,} make more "
                             f"than {MAX_UNITS:,} units; raise unit_samples")
        seed = params.get("seed")
        seed = secrets.randbits(63) if seed is None else _count("seed", seed, 0, 2**128 - 1)
        return Prepared(params={"samples": samples, "unit_samples": unit, "seed": seed})

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        samples, size = params["samples"], params["unit_samples"]
        n = math.ceil(samples / size)
        owners = placement.deal(n, shares)
        return [Unit(i, owners[i], {"samples": min(size, samples - i * size), "stream": i})
                for i in range(n)]

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        seq = seeding.unit_seed_sequence(params["seed"], spec["stream"])
        return {"inside": count_inside(np.random.default_rng(seq), spec["samples"]),
                "samples": spec["samples"]}

    def combine(self, params: Mapping[str, Any], partials: list[Any], inputs: Inputs) -> Any:
        inside = sum(p["inside"] for p in partials)
        samples = sum(p["samples"] for p in partials)
        return 4.0 * inside / samples

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"montecarlo pi, {params['samples']:,} samples, seed {params['seed']}"


def count_inside(rng: np.random.Generator, samples: int) -> int:
    """Points of ``samples`` uniform draws in [0,1)² that fall inside the unit circle."""
    inside = 0
    left = samples
    while left:
        m = min(left, DRAW)
        x = rng.random(m)
        y = rng.random(m)
        x *= x
        y *= y
        x += y
        inside += int(np.count_nonzero(x < 1.0))
        left -= m
    return inside


def estimate_locally(samples: int, seed: int, unit_samples: int = DEFAULT_UNIT_SAMPLES) -> float:
    """The same estimate computed in this process, unit by unit (for checks and demos)."""
    kind = MonteCarloKind()
    params = kind.prepare(samples=samples, seed=seed, unit_samples=unit_samples).params
    units = kind.split(params, {"local": 1.0}, 1)
    partials = [kind.process(u.spec, params, None) for u in units]  # type: ignore[arg-type]
    return float(kind.combine(params, partials, None))  # type: ignore[arg-type]
