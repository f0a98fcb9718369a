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


def unit_count(work: int, slaves: int, units_per_slave: int, minimum_size: int = 1) -> int:
    """How many equal units to cut ``work`` items into for ``slaves`` slaves.

    Several units per slave (not one), so a dead slave's share can be spread over the
    others and a slow slave's queue can be drained by faster ones; never more units than
    items (each unit holds at least ``minimum_size`` items, the last may hold fewer).
    """
    if work <= 0:
        return 1
    wanted = max(1, slaves * units_per_slave)
    return max(1, min(wanted, math.ceil(work / max(1, minimum_size))))


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
