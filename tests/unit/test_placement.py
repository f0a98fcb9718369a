"""Where work goes: units apportioned by performance, contiguous bounds, unit counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rqcluster.kinds.matmul import MatmulKind
from rqcluster.placement import apportion, batches, bounds, deal, unit_count

WEIGHT_MAPS = [
    {"solo": 1.0},
    {"s1": 1.0, "s2": 3.0},
    {"a": 1.0, "b": 1.0, "c": 1.0},
    {"a": 2.5, "b": 1.0, "c": 0.1, "d": 7.0},
    {"slow": 0.01, "fast": 100.0},
]


@pytest.mark.parametrize("weights", WEIGHT_MAPS)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 100, 1001])
def test_apportion_gives_out_every_unit_within_one_of_the_exact_share(
        n: int, weights: dict[str, float]) -> None:
    counts = apportion(n, weights)
    assert list(counts) == list(weights)
    assert sum(counts.values()) == n
    total = sum(weights.values())
    for name, w in weights.items():
        assert counts[name] >= 0
        assert abs(counts[name] - n * w / total) < 1


def test_apportion_gives_three_times_the_units_to_three_times_the_performance() -> None:
    assert apportion(8, {"s1": 1.0, "s2": 3.0}) == {"s1": 2, "s2": 6}
    assert apportion(400, {"s1": 1.0, "s2": 3.0}) == {"s1": 100, "s2": 300}


def test_apportion_is_deterministic_and_breaks_ties_by_slave_order() -> None:
    assert apportion(1, {"x": 1.0, "y": 1.0}) == {"x": 1, "y": 0}
    assert apportion(1, {"y": 1.0, "x": 1.0}) == {"y": 1, "x": 0}
    assert apportion(2, {"a": 1.0, "b": 1.0, "c": 1.0}) == {"a": 1, "b": 1, "c": 0}
    first = apportion(97, {"a": 2.5, "b": 1.0, "c": 0.1, "d": 7.0})
    assert all(apportion(97, {"a": 2.5, "b": 1.0, "c": 0.1, "d": 7.0}) == first
               for _ in range(5))


def test_apportion_never_gives_a_slower_slave_more_units() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 5.0}
    for n in range(60):
        counts = [apportion(n, weights)[k] for k in weights]
        assert counts == sorted(counts), (n, counts)


@pytest.mark.parametrize(
    "weights",
    [{}, {"a": 0.0}, {"a": 1.0, "b": -1.0}, {"a": float("nan")}, {"a": float("inf")}],
)
def test_apportion_refuses_weights_that_cannot_be_shared(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        apportion(4, weights)


def test_apportion_refuses_a_negative_unit_count() -> None:
    with pytest.raises(ValueError):
        apportion(-1, {"a": 1.0})


@pytest.mark.parametrize("weights", WEIGHT_MAPS)
@pytest.mark.parametrize("n", [0, 1, 5, 13, 64])
def test_deal_gives_each_slave_one_contiguous_run_sized_by_apportion(
        n: int, weights: dict[str, float]) -> None:
    owners = deal(n, weights)
    assert len(owners) == n
    runs = [(name, len(list(group))) for name, group in itertools.groupby(owners)]
    assert len({name for name, _ in runs}) == len(runs), f"a slave's units are split: {owners}"
    counts = apportion(n, weights)
    assert dict(runs) == {k: v for k, v in counts.items() if v}
    assert [name for name, _ in runs] == [k for k in weights if counts[k]]


@pytest.mark.parametrize("total", [0, 1, 2, 9, 10, 11, 100, 1003])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 10, 16])
def test_bounds_cover_the_range_exactly_in_near_equal_contiguous_pieces(
        total: int, parts: int) -> None:
    pieces = bounds(total, parts)
    assert len(pieces) == parts
    assert pieces[0][0] == 0 and pieces[-1][1] == total
    for (_, stop), (start, _) in itertools.pairwise(pieces):
        assert stop == start
    sizes = [stop - start for start, stop in pieces]
    assert all(size >= 0 for size in sizes)
    assert max(sizes) - min(sizes) <= 1
    assert [i for p in pieces for i in range(*p)] == list(range(total))


def test_bounds_treats_zero_parts_as_one() -> None:
    assert bounds(5, 0) == [(0, 5)]


@pytest.mark.parametrize(
    ("work", "weights", "per_slave", "expected"),
    [
        (1000, {"a": 1.0, "b": 1.0, "c": 1.0}, 4, 12),   # several units per slave
        (1000, {"a": 1.0, "b": 2.0}, 4, 9),              # the docstring's 3 + 6, not 3 + 5
        (1000, {"a": 1.5, "b": 2.5}, 4, 8),              # fractional: no rounding up
        (1000, {"a": 1.0, "b": 100.0}, 4, 8),            # a sum beyond the wanted count
        (5, {"a": 1.0, "b": 1.0, "c": 1.0}, 4, 5),       # never more units than items
        (1, {"a": 1.0, "b": 1.0}, 4, 1),
        (0, {"a": 1.0, "b": 1.0}, 4, 1),                 # empty work is still one unit
        (-5, {"a": 1.0}, 4, 1),
        (100, {"a": 1.0}, 0, 1),                         # at least one unit
    ],
)
def test_unit_count_stays_between_one_and_the_number_of_items(
        work: int, weights: dict[str, float], per_slave: int, expected: int) -> None:
    assert unit_count(work, weights, per_slave) == expected


@pytest.mark.parametrize("weights", WEIGHT_MAPS + [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0},
                                                   {"a": 1.0, "b": 5.0, "c": 2.0}])
@pytest.mark.parametrize("per_slave", [1, 2, 4, 8])
def test_unit_count_gives_several_units_per_slave_and_at_most_twice_that(
        weights: dict[str, float], per_slave: int) -> None:
    wanted = len(weights) * per_slave
    n = unit_count(10**9, weights, per_slave)
    assert wanted <= n <= 2 * wanted


@pytest.mark.parametrize("weights", [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0},
                                     {"a": 1.0, "b": 5.0, "c": 2.0}, {"a": 1.0, "b": 3.0}])
def test_unit_count_with_whole_performances_lets_every_share_be_exact(
        weights: dict[str, float]) -> None:
    n = unit_count(10**6, weights, 4)
    total = sum(weights.values())
    assert n % total == 0
    assert apportion(n, weights) == {k: int(n * w / total) for k, w in weights.items()}


@pytest.mark.parametrize("work", range(0, 40))
@pytest.mark.parametrize("weights", [{"a": 1.0}, {"a": 1.0, "b": 2.0},
                                     {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5, "e": 3.0}])
def test_unit_count_never_makes_more_units_than_items(
        work: int, weights: dict[str, float]) -> None:
    n = unit_count(work, weights, 4)
    assert 1 <= n <= max(1, work)


@pytest.mark.parametrize("rows", [5, 8, 100, 1001, 4096])
def test_matmul_gives_a_three_times_faster_slave_three_times_the_rows(rows: int) -> None:
    kind = MatmulKind()
    params = kind.prepare(a=np.zeros((rows, 3)), b=np.zeros((3, 2))).params
    units = kind.split(params, {"s1": 1.0, "s2": 3.0}, 4)

    per_slave = {"s1": 0, "s2": 0}
    for unit in units:
        lo, hi = unit.spec["rows"]
        per_slave[unit.slave] += hi - lo
    biggest_block = max(u.spec["rows"][1] - u.spec["rows"][0] for u in units)

    assert per_slave["s1"] + per_slave["s2"] == rows
    assert abs(per_slave["s2"] - 0.75 * rows) <= biggest_block
    assert abs(per_slave["s2"] - 3 * per_slave["s1"]) <= 4 * biggest_block
    assert per_slave["s1"] > 0


def test_matmul_splits_into_several_units_per_slave() -> None:
    kind = MatmulKind()
    params = kind.prepare(a=np.zeros((1000, 3)), b=np.zeros((3, 2))).params
    units = kind.split(params, {"a": 1.0, "b": 1.0, "c": 1.0}, 4)
    assert len(units) == 12
    assert [u.index for u in units] == list(range(12))
    assert {u.slave: sum(1 for v in units if v.slave == u.slave) for u in units} == \
        {"a": 4, "b": 4, "c": 4}


def test_a_slave_s_units_travel_in_two_rq_jobs_or_one_for_a_single_unit():
    assert batches([7]) == [[7]]
    assert batches([4, 5, 6]) == [[4, 5], [6]]
    assert batches(list(range(10))) == [list(range(5)), list(range(5, 10))]


def test_many_units_travel_in_batches_of_at_most_the_cap():
    big = batches(list(range(10_000)))
    assert {len(b) for b in big} == {64, 10_000 % 64}
    assert [u for b in big for u in b] == list(range(10_000))
    assert batches(list(range(40)), per_slave=8) == [list(range(i, i + 5))
                                                     for i in range(0, 40, 5)]


def test_no_units_make_no_batches():
    assert batches([]) == []
