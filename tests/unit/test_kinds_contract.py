"""The kinds contract: every kind, prepare → split → process → combine, against numpy.

One parametrised test runs every kind in ``rqcluster.kinds.KINDS`` the way the cluster
does, minus Redis: params and unit specs go through JSON (they are stored as JSON), and
partials and the result go through ``rqcluster.codec`` (they cross Redis as bytes).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rqcluster import codec
from rqcluster.errors import InputError, RQClusterError
from rqcluster.functions import unpack_function
from rqcluster.kinds import KINDS, Function, Items, Kind, get_kind
from rqcluster.kinds.montecarlo import count_inside, estimate_locally

# --- an in-memory view of a job's stored inputs ---------------------------------------------


class MemoryInputs:
    """``Inputs`` over ``Prepared.inputs``, read the way a slave reads them from Redis:
    arrays by row range (read-only copies), items decoded from their JSON lines, functions
    unpickled from their shipped bytes."""

    def __init__(self, inputs: Mapping[str, Any]) -> None:
        self._inputs = dict(inputs)

    def array(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        arr = self._inputs[name]
        assert isinstance(arr, np.ndarray), f"input {name!r} is not an array"
        if rows is not None:
            lo, hi = rows
            assert 0 <= lo <= hi <= arr.shape[0], f"rows {rows} outside {arr.shape}"
            arr = arr[lo:hi]
        out = np.array(arr, copy=True)
        out.setflags(write=False)
        return out

    def items(self, name: str, start: int, stop: int) -> list[Any]:
        items = self._inputs[name]
        assert isinstance(items, Items), f"input {name!r} is not an item list"
        assert 0 <= start <= stop <= len(items.lines)
        decode = codec.decode if items.format == "codec" else json.loads
        return [decode(line) for line in items.lines[start:stop]]

    def function(self, name: str) -> Callable[..., Any]:
        fn = self._inputs[name]
        assert isinstance(fn, Function), f"input {name!r} is not a function"
        return unpack_function(fn.blob)


def run_job(kind: Kind, user_params: dict[str, Any], shares: Mapping[str, float],
            units_per_slave: int = 4) -> Any:
    """prepare → split → process every unit → combine, with the cluster's serialisations."""
    prepared = kind.prepare(**user_params)
    params = json.loads(json.dumps(prepared.params))
    units = kind.split(params, shares, units_per_slave)
    assert [u.index for u in units] == list(range(len(units)))
    assert {u.slave for u in units} <= set(shares)
    inputs = MemoryInputs(prepared.inputs)
    partials = []
    for unit in units:
        spec = json.loads(json.dumps(unit.spec))
        partials.append(codec.decode(codec.encode(kind.process(spec, params, inputs))))
    result = kind.combine(params, partials, inputs)
    return codec.decode(codec.encode(result))


# --- user functions for map (module level, so they ship like a user's own module) ----------

def square(x: Any) -> Any:
    return x * x


def word_length(record: dict[str, Any]) -> int:
    return len(record["word"])


def row_total(row: np.ndarray) -> Any:
    return row.sum()


def larger(a: Any, b: Any) -> Any:
    return a if a >= b else b


def tag(record: dict[str, Any]) -> list[Any]:
    return [record["id"], record["word"].upper()]


# --- the cases --------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    kind: str
    build: Callable[[Path], dict[str, Any]]       # tmp_path -> user params
    check: Callable[[Any, dict[str, Any]], None]  # (result, user params) -> asserts


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _check_matmul_exact(result: Any, params: dict[str, Any]) -> None:
    a, b = (np.load(p) if isinstance(p, str | Path) else np.asarray(p)
            for p in (params["a"], params["b"]))
    expected = np.matmul(a, b)
    assert isinstance(result, np.ndarray)
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    assert np.array_equal(result, expected)


def _check_matmul_close(result: Any, params: dict[str, Any]) -> None:
    expected = np.matmul(np.asarray(params["a"]), np.asarray(params["b"]))
    assert isinstance(result, np.ndarray)
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=0)


def _save(tmp_path: Path, name: str, arr: np.ndarray) -> str:
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


def _check_montecarlo(result: Any, params: dict[str, Any]) -> None:
    expected = estimate_locally(params["samples"], params["seed"], params["unit_samples"])
    assert isinstance(result, float)
    assert result == expected  # bit for bit, whichever slaves ran the units
    assert abs(result - math.pi) < 0.02


def _equals(expected: Callable[[dict[str, Any]], Any]) -> Callable[[Any, dict[str, Any]], None]:
    def check(result: Any, params: dict[str, Any]) -> None:
        want = expected(params)
        assert result == want
        assert type(result) is type(want)
    return check


WORDS = ["alpha", "be", "gamma", "déjà", "", "epsilon-long-word", "z"] * 5
RECORDS = [{"id": i, "word": w} for i, w in enumerate(WORDS)]
ROWS = np.arange(60, dtype=np.int64).reshape(20, 3) - 17


def _write_jsonl(tmp_path: Path) -> str:
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")  # a trailing blank
    return str(path)


def _check_calibrate(result: Any, params: dict[str, Any]) -> None:
    # run_job runs every unit in this process: one entry per slave of the shares,
    # named by the unit's own slave (no RQCLUSTER_NODE here), each a positive time.
    assert isinstance(result, dict) and result
    assert all(isinstance(t, float) and t > 0 for t in result.values())


CASES = [
    # calibrate ----------------------------------------------------------------------
    pytest.param(Case("calibrate", lambda _: {"rounds": 1}, _check_calibrate),
                 id="calibrate-one-unit-per-slave"),
    # matmul -------------------------------------------------------------------------
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(1).integers(-1000, 1000, (37, 23)),
                                 "b": _rng(2).integers(-1000, 1000, (23, 11))},
                      _check_matmul_exact), id="matmul-int64"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(3).integers(-2**40, 2**40, (9, 5)),
                                 "b": _rng(4).integers(-2**40, 2**40, (5, 4))},
                      _check_matmul_exact), id="matmul-int64-wrapping"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(5).standard_normal((31, 17)),
                                 "b": _rng(6).standard_normal((17, 13))},
                      _check_matmul_close), id="matmul-float64"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(7).integers(-50, 50, (12, 6)).astype(np.int32),
                                 "b": _rng(8).standard_normal((6, 9))},
                      _check_matmul_close), id="matmul-int32-by-float64"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(9).integers(0, 9, (1, 40)).astype(np.uint8),
                                 "b": _rng(10).integers(0, 9, (40, 3)).astype(np.uint8)},
                      _check_matmul_exact), id="matmul-one-row-uint8"),
    pytest.param(Case("matmul",
                      lambda _: {"a": np.zeros((0, 4), dtype=np.int64),
                                 "b": _rng(11).integers(0, 9, (4, 6))},
                      _check_matmul_exact), id="matmul-zero-rows"),
    pytest.param(Case("matmul",
                      lambda _: {"a": np.zeros((5, 0), dtype=np.float64),
                                 "b": np.zeros((0, 3), dtype=np.float64)},
                      _check_matmul_exact), id="matmul-zero-inner-dimension"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(12).random((14, 8)) < 0.3,
                                 "b": _rng(13).random((8, 5)) < 0.3},
                      _check_matmul_exact), id="matmul-bool"),
    pytest.param(Case("matmul",
                      lambda _: {"a": (_rng(14).standard_normal((6, 4))
                                       + 1j * _rng(15).standard_normal((6, 4))),
                                 "b": _rng(16).standard_normal((4, 2))},
                      _check_matmul_close), id="matmul-complex"),
    pytest.param(Case("matmul",
                      lambda t: {"a": _save(t, "a.npy", _rng(17).integers(-9, 9, (25, 7))),
                                 "b": _save(t, "b.npy", _rng(18).integers(-9, 9, (7, 30)))},
                      _check_matmul_exact), id="matmul-npy-files"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(5).integers(-1000, 1000, (37, 23)),
                                 "b": _rng(6).integers(-1000, 1000, (23, 11)),
                                 "memory_budget": 400},
                      _check_matmul_exact), id="matmul-tiles-one-column-each"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(7).integers(-1000, 1000, (19, 23)),
                                 "b": _rng(8).integers(-1000, 1000, (23, 11)),
                                 "memory_budget": 1000},
                      _check_matmul_exact), id="matmul-tiles-uneven-panels"),
    pytest.param(Case("matmul",
                      lambda _: {"a": _rng(9).random((16, 30)), "b": _rng(10).random((30, 9)),
                                 "memory_budget": 1500},
                      _check_matmul_close), id="matmul-tiles-float64"),
    # montecarlo ---------------------------------------------------------------------
    pytest.param(Case("montecarlo",
                      lambda _: {"samples": 200_000, "seed": 12345, "unit_samples": 9_000},
                      _check_montecarlo), id="montecarlo-many-units"),
    pytest.param(Case("montecarlo",
                      lambda _: {"samples": 150_001, "seed": 2**100 + 7, "unit_samples": 150_001},
                      _check_montecarlo), id="montecarlo-one-unit-big-seed"),
    # map ----------------------------------------------------------------------------
    pytest.param(Case("map",
                      lambda _: {"function": tag, "items": RECORDS, "reduce": "list"},
                      _equals(lambda p: [tag(r) for r in RECORDS])), id="map-records-list"),
    pytest.param(Case("map",
                      lambda _: {"function": word_length, "items": RECORDS, "reduce": "sum"},
                      _equals(lambda p: sum(len(w) for w in WORDS))), id="map-records-sum"),
    pytest.param(Case("map",
                      lambda _: {"function": word_length, "items": RECORDS, "reduce": larger},
                      _equals(lambda p: max(len(w) for w in WORDS))),
                 id="map-records-user-reduce"),
    pytest.param(Case("map",
                      lambda _: {"function": square, "items": list(range(-7, 40)),
                                 "reduce": max},
                      _equals(lambda p: max(x * x for x in range(-7, 40)))),
                 id="map-builtin-max-reduce"),
    pytest.param(Case("map",
                      lambda t: {"function": word_length, "items": _write_jsonl(t)},
                      _equals(lambda p: [len(w) for w in WORDS])), id="map-jsonl-file-list"),
    pytest.param(Case("map",
                      lambda _: {"function": row_total, "items": ROWS, "reduce": "list"},
                      _equals(lambda p: [int(r.sum()) for r in ROWS])), id="map-npy-rows-list"),
    pytest.param(Case("map",
                      lambda t: {"function": row_total, "items": _save(t, "rows.npy", ROWS),
                                 "reduce": "sum"},
                      _equals(lambda p: int(ROWS.sum()))), id="map-npy-file-sum"),
    pytest.param(Case("map",
                      lambda _: {"function": square, "items": np.linspace(0, 1, 33),
                                 "reduce": "list"},
                      _equals(lambda p: [float(x * x) for x in np.linspace(0, 1, 33)])),
                 id="map-1d-float-array"),
    pytest.param(Case("map",
                      lambda _: {"function": square, "items": range(3, 500, 7),
                                 "reduce": "sum"},
                      _equals(lambda p: sum(x * x for x in range(3, 500, 7)))), id="map-range-sum"),
    pytest.param(Case("map",
                      lambda _: {"function": square, "items": range(10, -10, -3)},
                      _equals(lambda p: [x * x for x in range(10, -10, -3)])),
                 id="map-descending-range-list"),
    pytest.param(Case("map",
                      lambda _: {"function": "math:sqrt", "items": [0, 1, 4, 9, 16.0],
                                 "reduce": "list"},
                      _equals(lambda p: [0.0, 1.0, 2.0, 3.0, 4.0])), id="map-function-by-ref"),
    pytest.param(Case("map",
                      lambda _: {"function": square, "items": [], "reduce": "sum"},
                      _equals(lambda p: 0)), id="map-empty-sum"),
    pytest.param(Case("map",
                      lambda _: {"function": square, "items": [], "reduce": "list"},
                      _equals(lambda p: [])), id="map-empty-list"),
    pytest.param(Case("map",
                      lambda _: {"function": square, "items": range(0), "reduce": "sum"},
                      _equals(lambda p: 0)), id="map-empty-range-sum"),
]

SHARES = [
    pytest.param({"solo": 1.0}, id="one-slave"),
    pytest.param({"fast": 3.0, "slow": 1.0, "mid": 0.5}, id="three-slaves"),
    pytest.param({f"s{i}": 1.0 + i for i in range(9)}, id="nine-slaves"),
]


@pytest.mark.parametrize("shares", SHARES)
@pytest.mark.parametrize("case", CASES)
def test_every_kind_gives_the_directly_computed_result(case: Case, shares: dict[str, float],
                                                       tmp_path: Path) -> None:
    params = case.build(tmp_path)
    result = run_job(get_kind(case.kind), dict(params), shares)
    case.check(result, params)


def test_the_contract_covers_every_registered_kind() -> None:
    covered = {p.values[0].kind for p in CASES}  # type: ignore[attr-defined]
    split = {name for name, kind in KINDS.items() if not kind.coordinated}  # graph: steps
    assert split <= covered, f"no contract case for {split - covered}"


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_is_named_and_described(name: str) -> None:
    kind = KINDS[name]
    assert kind.name == name
    assert kind.help and "\n" not in kind.help


# --- montecarlo: reproducible whichever slave runs which unit ------------------------------

def test_montecarlo_estimate_is_identical_for_any_placement_and_for_retries() -> None:
    user = {"samples": 120_000, "seed": 99, "unit_samples": 7_000}
    one = run_job(KINDS["montecarlo"], user, {"only": 1.0})
    three = run_job(KINDS["montecarlo"], user, {"a": 1.0, "b": 5.0, "c": 0.25})

    kind = KINDS["montecarlo"]
    params = kind.prepare(**user).params
    units = kind.split(params, {"x": 1.0}, 1)
    retried = [kind.process(u.spec, params, MemoryInputs({})) for u in units]
    again = [kind.process(u.spec, params, MemoryInputs({})) for u in reversed(units)][::-1]

    assert one == three == estimate_locally(120_000, 99, 7_000)
    assert retried == again


def test_montecarlo_unit_streams_are_the_job_seeds_spawned_children() -> None:
    kind = KINDS["montecarlo"]
    params = kind.prepare(samples=50_000, seed=2024, unit_samples=12_000).params
    units = kind.split(params, {"x": 1.0}, 4)
    children = np.random.SeedSequence(2024).spawn(len(units))
    for unit, child in zip(units, children, strict=True):
        partial = kind.process(unit.spec, params, MemoryInputs({}))
        assert partial["inside"] == count_inside(np.random.default_rng(child),
                                                 unit.spec["samples"])


def test_montecarlo_units_add_up_to_the_requested_samples() -> None:
    kind = KINDS["montecarlo"]
    params = kind.prepare(samples=100_003, seed=1, unit_samples=10_000).params
    units = kind.split(params, {"a": 1.0, "b": 2.0}, 4)
    assert len(units) == 11
    assert sum(u.spec["samples"] for u in units) == 100_003
    assert units[-1].spec["samples"] == 3


def test_montecarlo_different_seeds_give_different_estimates() -> None:
    estimates = {estimate_locally(100_000, seed, 25_000) for seed in range(5)}
    assert len(estimates) == 5


def test_montecarlo_without_a_seed_picks_one_and_records_it() -> None:
    kind = KINDS["montecarlo"]
    first = kind.prepare(samples=1000).params["seed"]
    second = kind.prepare(samples=1000).params["seed"]
    assert isinstance(first, int) and first >= 0
    assert first != second


def test_map_batches_many_items_into_few_units() -> None:
    kind = KINDS["map"]
    params = kind.prepare(function=square, items=range(100_000)).params
    units = kind.split(params, {"a": 1.0, "b": 1.0}, 4)
    assert 2 <= len(units) <= 16
    spans = [u.spec["items"] for u in units]
    assert spans[0][0] == 0 and spans[-1][1] == 100_000
    assert all(prev[1] == nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))


def test_map_with_a_user_reduce_refuses_an_empty_input_at_combine() -> None:
    with pytest.raises(InputError, match="empty"):
        run_job(KINDS["map"], {"function": square, "items": [], "reduce": larger}, {"a": 1.0})


# --- bad input is refused before anything is written ----------------------------------------

def _text_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _lock_closure() -> Callable[[Any], Any]:
    lock = threading.Lock()
    return lambda x: (lock, x)[1]


OK_A = np.ones((3, 4))
OK_B = np.ones((4, 2))

BAD_INPUTS = [
    # matmul
    pytest.param("matmul", lambda t: {"a": np.ones((3, 4)), "b": np.ones((5, 2))},
                 ["(3, 4)", "(5, 2)", "align"], id="matmul-shape-mismatch"),
    pytest.param("matmul", lambda t: {"a": np.ones(4), "b": OK_B}, ["A", "2-D", "(4,)"],
                 id="matmul-1d-a"),
    pytest.param("matmul", lambda t: {"a": OK_A, "b": np.ones((4, 2, 2))}, ["B", "2-D"],
                 id="matmul-3d-b"),
    pytest.param("matmul", lambda t: {"a": np.array([[1, "x"]], dtype=object), "b": OK_B},
                 ["dtype object"], id="matmul-object-dtype"),
    pytest.param("matmul", lambda t: {"a": np.array([["a", "b"]]), "b": OK_B},
                 ["dtype <U1", "numeric"], id="matmul-string-dtype"),
    pytest.param("matmul", lambda t: {"a": str(t / "missing.npy"), "b": OK_B},
                 ["file not found", "missing.npy"], id="matmul-missing-file"),
    pytest.param("matmul", lambda t: {"a": _text_file(t, "a.txt", "1 2 3\n4 5 6\n"),
                                      "b": OK_B},
                 ["a.txt", "not a .npy file"], id="matmul-text-file"),
    pytest.param("matmul", lambda t: {"a": str(t), "b": OK_B}, ["directory"],
                 id="matmul-directory"),
    pytest.param("matmul", lambda t: {"a": OK_A, "b": OK_B, "c": OK_B},
                 ["unknown parameter 'c'"], id="matmul-unknown-parameter"),
    pytest.param("matmul", lambda t: {"a": OK_A}, ["b is required"], id="matmul-no-b"),
    # montecarlo
    pytest.param("montecarlo", lambda t: {"samples": 0}, ["samples", "got 0"],
                 id="montecarlo-zero-samples"),
    pytest.param("montecarlo", lambda t: {"samples": -5}, ["samples", "got -5"],
                 id="montecarlo-negative-samples"),
    pytest.param("montecarlo", lambda t: {"samples": 10**13 + 1}, ["samples", "between"],
                 id="montecarlo-absurd-samples"),
    pytest.param("montecarlo", lambda t: {"samples": 10**30}, ["samples", "between"],
                 id="montecarlo-astronomical-samples"),
    pytest.param("montecarlo", lambda t: {"samples": 2.5}, ["whole number", "2.5"],
                 id="montecarlo-fractional-samples"),
    pytest.param("montecarlo", lambda t: {"samples": "1000"}, ["whole number", "'1000'"],
                 id="montecarlo-string-samples"),
    pytest.param("montecarlo", lambda t: {"samples": True}, ["whole number"],
                 id="montecarlo-bool-samples"),
    pytest.param("montecarlo", lambda t: {"samples": float("nan")}, ["whole number"],
                 id="montecarlo-nan-samples"),
    pytest.param("montecarlo", lambda t: {}, ["samples is required"], id="montecarlo-no-samples"),
    pytest.param("montecarlo", lambda t: {"samples": 10, "seed": -1}, ["seed"],
                 id="montecarlo-negative-seed"),
    pytest.param("montecarlo", lambda t: {"samples": 10, "unit_samples": 0},
                 ["unit_samples"], id="montecarlo-zero-unit-samples"),
    pytest.param("montecarlo", lambda t: {"samples": 10**12, "unit_samples": 10},
                 ["more than", "units"], id="montecarlo-too-many-units"),
    pytest.param("montecarlo", lambda t: {"samples": 10, "sample": 10},
                 ["unknown parameter 'sample'"], id="montecarlo-unknown-parameter"),
    # map
    pytest.param("map", lambda t: {"function": "no_such_module_for_rqcluster:f", "items": [1]},
                 ["no_such_module_for_rqcluster", "cannot import"], id="map-missing-module"),
    pytest.param("map", lambda t: {"function": "json:no_such_function", "items": [1]},
                 ["'json'", "no attribute", "no_such_function"], id="map-missing-attribute"),
    pytest.param("map", lambda t: {"function": "json.dumps", "items": [1]},
                 ["MODULE:FUNCTION"], id="map-ref-without-colon"),
    pytest.param("map", lambda t: {"function": "json:__name__", "items": [1]},
                 ["not a function"], id="map-ref-to-a-string"),
    pytest.param("map", lambda t: {"function": square, "items": [1], "reduce": "json:nope"},
                 ["map reduce", "no attribute"], id="map-missing-reduce-function"),
    pytest.param("map", lambda t: {"function": square, "items": [1], "reduce": "product"},
                 ["MODULE:FUNCTION", "product"], id="map-unknown-reduce-name"),
    pytest.param("map", lambda t: {"function": _lock_closure(), "items": [1]},
                 ["cannot ship", "<lambda>", "lock"], id="map-unpicklable-function"),
    pytest.param("map", lambda t: {"function": 42, "items": [1]}, ["function"],
                 id="map-function-not-callable"),
    pytest.param("map", lambda t: {"function": square, "items": [1, {2, 3}]},
                 ["item 1", "cannot send a builtins.set"], id="map-set-item"),
    pytest.param("map", lambda t: {"function": square, "items": [object()]},
                 ["item 0", "cannot send a builtins.object"], id="map-object-item"),
    pytest.param("map", lambda t: {"function": square, "items": 5}, ["int"],
                 id="map-items-not-iterable"),
    pytest.param("map", lambda t: {"function": square, "items": np.float64(3.0)},
                 ["map input"], id="map-scalar-items"),
    pytest.param("map", lambda t: {"function": square, "items": np.array(3)}, ["0-d"],
                 id="map-0d-array"),
    pytest.param("map", lambda t: {"function": square, "items": np.array([None], dtype=object)},
                 ["dtype object"], id="map-object-array"),
    pytest.param("map", lambda t: {"function": square, "items": str(t / "none.jsonl")},
                 ["file not found"], id="map-missing-jsonl"),
    pytest.param("map", lambda t: {"function": square,
                                   "items": _text_file(t, "bad.jsonl", '1\n{"a": \n3\n')},
                 ["bad.jsonl:2", "not valid JSON"], id="map-bad-jsonl-line"),
    pytest.param("map", lambda t: {"function": square, "items": _text_file(t, "x.csv", "1,2")},
                 [".jsonl", ".npy"], id="map-csv-file"),
    pytest.param("map", lambda t: {"function": square}, ["items is required"],
                 id="map-no-items"),
    pytest.param("map", lambda t: {"function": square, "items": [1], "chunk": 3},
                 ["unknown parameter 'chunk'"], id="map-unknown-parameter"),
]


@pytest.mark.parametrize(("kind_name", "build", "fragments"), BAD_INPUTS)
def test_bad_input_is_refused_with_a_message_a_user_can_act_on(
        kind_name: str, build: Callable[[Path], dict[str, Any]], fragments: list[str],
        tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        get_kind(kind_name).prepare(**build(tmp_path))
    message = str(info.value)
    assert isinstance(info.value, RQClusterError)
    assert "\n" not in message
    assert message.startswith(kind_name)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(InputError) as info:
        get_kind("fft")
    assert "'fft'" in str(info.value)
    for name in KINDS:
        assert name in str(info.value)
