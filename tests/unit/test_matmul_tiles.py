"""matmul's 2-D tiles: B over half the memory budget is stored as column panels and every
unit is one row block times one panel; the result's row blocks are its tiles side by side."""

from __future__ import annotations

import fakeredis
import numpy as np
import pytest

from rqcluster import jobdata, keys, store
from rqcluster.config import Options
from rqcluster.errors import InputError
from rqcluster.kinds import get_kind

MATMUL = get_kind("matmul")


def test_b_within_half_the_budget_is_not_tiled() -> None:
    b = np.ones((10, 10), dtype=np.int64)  # 800 bytes
    prepared = MATMUL.prepare(a=np.ones((4, 10), dtype=np.int64), b=b, memory_budget=1600)
    assert "panels" not in prepared.params and set(prepared.inputs) == {"a", "b"}


def test_b_over_half_the_budget_is_stored_as_column_panels_within_it() -> None:
    b = np.arange(10 * 25, dtype=np.int64).reshape(10, 25)  # a column is 80 bytes
    prepared = MATMUL.prepare(a=np.ones((4, 10), dtype=np.int64), b=b, memory_budget=500)
    panels = prepared.params["panels"]
    assert panels == [[0, 3], [3, 6], [6, 9], [9, 12], [12, 15], [15, 18], [18, 21],
                      [21, 24], [24, 25]]
    for j, (c0, c1) in enumerate(panels):
        panel = prepared.inputs[f"b{j}"]
        assert isinstance(panel, np.ndarray) and panel.flags.c_contiguous
        assert panel.nbytes <= 250
        np.testing.assert_array_equal(panel, b[:, c0:c1])
    assert "b" not in prepared.inputs


def test_tiles_are_numbered_panel_by_panel_and_cover_c_once() -> None:
    params = MATMUL.prepare(a=np.ones((30, 8)), b=np.ones((8, 12)), memory_budget=200).params
    units = MATMUL.split(params, {"s1": 1.0, "s2": 2.0}, 2)
    panels = len(params["panels"])
    assert [u.index for u in units] == list(range(len(units)))
    assert [u.spec["panel"] for u in units] == sorted(u.spec["panel"] for u in units)
    covered = {(tuple(u.spec["rows"]), u.spec["panel"]) for u in units}
    assert len(covered) == len(units) == panels * (len(units) // panels)
    groups = MATMUL.stack_groups(params, len(units))
    for group in groups:  # one row block, every panel left to right
        assert [units[u].spec["panel"] for u in group] == list(range(panels))
        assert len({tuple(units[u].spec["rows"]) for u in group}) == 1
    owners = [u.slave for u in units]
    assert owners == sorted(owners, key=owners.index)  # each slave one contiguous run


@pytest.mark.parametrize("budget", [0, -5, 1.5, True, "1 GB"])
def test_a_bad_memory_budget_is_refused(budget: object) -> None:
    with pytest.raises(InputError, match="memory_budget"):
        MATMUL.prepare(a=np.ones((2, 2)), b=np.ones((2, 2)), memory_budget=budget)


def test_the_api_default_comes_from_the_config_in_mib() -> None:
    assert MATMUL.defaults(Options(memory_budget=3)) == {"memory_budget": 3 * 2**20}
    assert get_kind("montecarlo").defaults(Options()) == {}


def test_a_slave_caches_one_panel_of_a_job_at_a_time() -> None:
    conn = fakeredis.FakeRedis()
    for j in range(3):
        store.put_array(conn, keys.job_input("job1", f"b{j}"), np.full((4, 2), j))
    inputs = jobdata.JobInputs(conn, "job1")
    try:
        for j in (0, 0, 1, 2):
            np.testing.assert_array_equal(inputs.array(f"b{j}"), np.full((4, 2), j))
            cached = [k for k in jobdata._cache if k[:2] == ("job1", "array")]
            assert cached == [("job1", "array", f"b{j}")]
        assert conn.hget(keys.job("job1"), "fetched:b0") == b"1"  # cached between units
    finally:
        jobdata.forget("job1")
