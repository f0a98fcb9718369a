"""Pure decisions about where work goes: how many units each slave gets.

No Redis, no clock: plain data in, plain data out, so every rule is testable alone
(like dask's ``decide_worker``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def apportion(n: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``n`` equal units among slaves in proportion to their weights.

    Largest-remainder (Hamilton) apportionment: each slave gets the floor of its exact
    share, then the units left over go to the largest remainders (ties broken by the
    order of ``weights``, so the answer is deterministic). Every count is within one unit
    of the exact proportional share.
    """
    if n < 0:
        raise ValueError(f"cannot apportion {n} units")
    if not weights:
        raise ValueError("cannot apportion units among no slaves")
    total = sum(weights.values())
    if not all(w > 0 and math.isfinite(w) for w in weights.values()):
        raise ValueError(f"weights must be finite and > 0, got {dict(weights)}")
    exact = {name: n * w / total for name, w in weights.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    order = list(weights)
    leftovers = sorted(order, key=lambda name: (-(exact[name] - counts[name]),
                                                order.index(name)))
    for name in leftovers[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def unit_count(work: int, weights: Mapping[str, float], units_per_slave: int) -> int:
    """How many equal units to cut ``work`` items into for slaves of these weights.

    Several units per slave (not one), so a dead slave's share can be spread over the
    others and a slow slave's queue can be drained by faster ones. When performances are
    whole numbers, the count is rounded up to a multiple of their sum (if that at most
    doubles it), so every slave's share is exact: performances 1 and 2 give 9 units split
    3 + 6 rather than 8 split 3 + 5. Never more units than items.
    """
    if work <= 0:
        return 1
    wanted = max(1, len(weights) * units_per_slave)
    total = sum(weights.values())
    if all(float(w).is_integer() for w in weights.values()) and total <= wanted:
        exact = math.ceil(wanted / total) * int(total)
        if exact <= 2 * wanted:
            wanted = exact
    return max(1, min(wanted, work))


def deal(n: int, weights: Mapping[str, float]) -> list[str]:
    """The slave of each of ``n`` units, in unit order: contiguous runs sized by
    ``apportion`` (a slave reads adjacent rows, and the split is easy to read)."""
    owners: list[str] = []
    for name, count in apportion(n, weights).items():
        owners += [name] * count
    return owners


def bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``range(total)`` into ``parts`` contiguous, near-equal [start, stop) pieces."""
    parts = max(1, parts)
    size, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


# A slave's units of a job travel in this many RQ jobs (one if it has a single unit),
# at most MAX_BATCH units each: RQ's bookkeeping costs ~30 round trips per RQ job, which
# tiny units would otherwise pay one by one. Units are still started, tracked, moved and
# completed one at a time, so a batch never hides a unit from the reaper (or a thief).
BATCHES_PER_SLAVE = 2
MAX_BATCH = 64


def batches(units: list[int], per_slave: int = BATCHES_PER_SLAVE,
            most: int = MAX_BATCH) -> list[list[int]]:
    """Cut one slave's units (in order) into the RQ jobs that carry them: ``per_slave``
    near-equal runs, never more than ``most`` units together."""
    if not units:
        return []
    size = min(most, max(1, math.ceil(len(units) / per_slave)))
    return [units[i:i + size] for i in range(0, len(units), size)]
