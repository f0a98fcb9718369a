"""The command line end to end: real `python -m rqcluster` runs against a real cluster.

One cluster (master in assign-reduce mode, slave1 with performance 1, slave2 with
performance 2) serves the module; tests that need a cluster without slaves, or a Redis
that nothing else writes to, get their own.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from rqcluster.broker import Broker, free_port
from rqcluster.kinds.montecarlo import estimate_locally
from tests.integration.harness import NodeCluster, cli, describe, write_config

pytestmark = pytest.mark.integration

JOB_TIMEOUT = "60"


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, describe(proc)
    return proc


def json_out(proc: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(proc.stdout)
    except ValueError as e:
        raise AssertionError(f"stdout is not one JSON document ({e})\n{describe(proc)}") from e


def job_id_of(proc: subprocess.CompletedProcess[str]) -> str:
    """The job id `enqueue` printed: it must be alone on stdout, on one line."""
    ok(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"\S+", lines[0]), describe(proc)
    return lines[0]


@pytest.fixture(scope="module")
def ints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    d = tmp_path_factory.mktemp("ints")
    rng = np.random.default_rng(64)
    a = rng.integers(-1000, 1000, size=(64, 48), dtype=np.int64)
    b = rng.integers(-1000, 1000, size=(48, 40), dtype=np.int64)
    np.save(d / "A.npy", a)
    np.save(d / "B.npy", b)
    return d, a, b


@pytest.fixture(scope="module")
def floats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    d = tmp_path_factory.mktemp("floats")
    rng = np.random.default_rng(200)
    a, b = rng.random((200, 200)), rng.random((200, 200))
    np.save(d / "A.npy", a)
    np.save(d / "B.npy", b)
    return d, a, b


# --- matmul ---------------------------------------------------------------------------------

def test_enqueue_prints_the_job_id_alone_and_result_writes_the_exact_integer_product(
        cluster: NodeCluster, ints: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    d, a, b = ints
    job = job_id_of(cluster.cli("enqueue", "matmul", str(d / "A.npy"), str(d / "B.npy")))

    ok(cluster.cli("result", job, "--wait", "--timeout", JOB_TIMEOUT,
                   "-o", str(tmp_path / "C.npy")))

    c = np.load(tmp_path / "C.npy")
    assert c.dtype == np.int64
    np.testing.assert_array_equal(c, a @ b)


def test_enqueue_with_output_waits_and_writes_a_float_product_close_to_numpy(
        cluster: NodeCluster, floats: tuple[Path, np.ndarray, np.ndarray],
        tmp_path: Path) -> None:
    d, a, b = floats
    out = tmp_path / "C.npy"

    ok(cluster.cli("enqueue", "matmul", str(d / "A.npy"), str(d / "B.npy"), "-o", str(out),
                   "--timeout", JOB_TIMEOUT))

    c = np.load(out)
    assert c.dtype == np.float64 and c.shape == (200, 200)
    np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=0)


def test_enqueue_wait_json_prints_one_document_with_state_done_and_the_result(
        cluster: NodeCluster, ints: tuple[Path, np.ndarray, np.ndarray]) -> None:
    d, a, b = ints
    doc = json_out(ok(cluster.cli("enqueue", "matmul", str(d / "A.npy"), str(d / "B.npy"),
                                  "--wait", "--json", "--timeout", JOB_TIMEOUT)))

    assert doc["state"] == "done"
    assert doc["result"]["shape"] == [64, 40]
    np.testing.assert_array_equal(np.array(doc["result"]["data"]), a @ b)


def test_status_json_shows_every_unit_done_and_spread_over_both_slaves(
        cluster: NodeCluster, ints: tuple[Path, np.ndarray, np.ndarray]) -> None:
    d, _, _ = ints
    job = job_id_of(cluster.cli("enqueue", "matmul", str(d / "A.npy"), str(d / "B.npy")))
    ok(cluster.cli("result", job, "--wait", "--timeout", JOB_TIMEOUT, "--json"))

    st = json_out(ok(cluster.cli("status", job, "--json")))

    assert st["id"] == job and st["state"] == "done"
    assert st["total"] >= 2
    assert st["done"] == st["total"]
    assert sum(st["per_slave"].values()) == st["total"]
    assert set(st["per_slave"]) == {"slave1", "slave2"}
    assert min(st["per_slave"].values()) > 0
    # B is stored once and fetched once per slave (not once per unit); A by row blocks.
    assert st["fetched"] == {"b": 2}
    assert st["total"] > 2


# --- montecarlo -----------------------------------------------------------------------------

def test_montecarlo_gives_bit_for_bit_the_estimate_of_a_local_run_with_the_same_seed(
        cluster: NodeCluster) -> None:
    samples, seed, unit = 2_000_000, 20260, 100_000

    doc = json_out(ok(cluster.cli("enqueue", "montecarlo", "--samples", str(samples),
                                  "--seed", str(seed), "--unit-samples", str(unit),
                                  "--wait", "--json", "--timeout", JOB_TIMEOUT)))

    assert doc["state"] == "done"
    assert doc["result"] == estimate_locally(samples, seed, unit)
    assert abs(doc["result"] - np.pi) < 0.01


# --- map ------------------------------------------------------------------------------------

@pytest.fixture
def jsonl(user_module: tuple[Path, str]) -> Path:
    d, _ = user_module
    path = d / "items.jsonl"
    path.write_text("".join(f"{i}\n" for i in range(300)))
    return path


@pytest.mark.parametrize(("reduce", "expected"), [
    ("sum", sum(i * i + 1 for i in range(300))),
    ("list", [i * i + 1 for i in range(300)]),
    ("MODULE:biggest", 299 * 299 + 1),
], ids=["sum", "list", "user-function"])
def test_map_ships_a_function_from_the_users_own_module_and_reduces_it(
        cluster: NodeCluster, user_module: tuple[Path, str], jsonl: Path, reduce: str,
        expected: Any) -> None:
    d, mod = user_module
    doc = json_out(ok(cluster.cli("enqueue", "map", f"{mod}:square", jsonl.name,
                                  "--reduce", reduce.replace("MODULE", mod),
                                  "--wait", "--json", "--timeout", JOB_TIMEOUT, cwd=d)))

    assert doc["state"] == "done"
    assert doc["result"] == expected


def test_the_users_module_is_not_importable_on_the_slaves_that_run_its_function(
        cluster: NodeCluster, user_module: tuple[Path, str], jsonl: Path) -> None:
    d, mod = user_module
    job = job_id_of(cluster.cli("enqueue", "map", f"{mod}:importable_here", jsonl.name,
                                cwd=d))
    doc = json_out(ok(cluster.cli("result", job, "--wait", "--json", "--timeout",
                                  JOB_TIMEOUT)))

    assert doc["result"] == [False] * 300  # ran everywhere, importable nowhere
    st = json_out(ok(cluster.cli("status", job, "--json")))
    assert st["total"] > 1, "items should be batched into several units"
    assert st["total"] < 300, "items should be batched, not one unit per item"


def test_map_over_a_npy_file_applies_the_function_to_each_row(
        cluster: NodeCluster, user_module: tuple[Path, str]) -> None:
    d, mod = user_module
    rows = np.arange(150 * 7, dtype=np.int64).reshape(150, 7)
    np.save(d / "rows.npy", rows)

    doc = json_out(ok(cluster.cli("enqueue", "map", f"{mod}:rowsum", "rows.npy",
                                  "--reduce", "list", "--wait", "--json",
                                  "--timeout", JOB_TIMEOUT, cwd=d)))

    assert doc["result"] == [int(r.sum()) for r in rows]


# --- failures -------------------------------------------------------------------------------

def test_an_exception_in_user_code_fails_the_job_with_the_remote_traceback(
        cluster: NodeCluster, user_module: tuple[Path, str], jsonl: Path) -> None:
    d, mod = user_module

    proc = cluster.cli("enqueue", "map", f"{mod}:boom", jsonl.name, "--wait",
                       "--timeout", JOB_TIMEOUT, cwd=d)

    assert proc.returncode != 3, f"the failing job hung\n{describe(proc)}"
    assert proc.returncode == 1, describe(proc)
    for text in ("ValueError", "bad item 7", "Traceback"):
        assert text in proc.stderr, describe(proc)

    recent = json_out(ok(cluster.cli("status", "--json")))
    job = next(r["id"] for r in recent if r["params"].get("function") == f"{mod}:boom")
    shown = ok(cluster.cli("status", job))
    assert "failed" in shown.stdout and "bad item 7" in shown.stdout, describe(shown)
    result = cluster.cli("result", job)
    assert result.returncode == 1 and "bad item 7" in result.stderr, describe(result)


# --- bad input: refused before anything is written ------------------------------------------

@pytest.fixture(scope="module")
def idle_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Redis no node writes to, so a refused command must leave DBSIZE unchanged."""
    broker = Broker(free_port(), tmp_path_factory.mktemp("idle-redis"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, idle_broker: Broker) -> Path:
    d = tmp_path_factory.mktemp("bad-inputs")
    write_config(d / "config.json", idle_broker.url)
    write_config(d / "unreachable.json", f"redis://127.0.0.1:{free_port()}/0")
    bad = json.loads((d / "config.json").read_text())
    bad["slaves"][1]["performance"] = "fast"
    (d / "bad-config.json").write_text(json.dumps(bad))
    np.save(d / "A.npy", np.ones((64, 48), dtype=np.int64))
    np.save(d / "B.npy", np.ones((48, 10), dtype=np.int64))
    np.save(d / "B47.npy", np.ones((47, 10), dtype=np.int64))
    np.save(d / "cube.npy", np.ones((4, 4, 4)))
    objects = np.empty((2, 2), dtype=object)
    objects[:] = [[1, "two"], [None, 4.0]]
    np.save(d / "objects.npy", objects, allow_pickle=True)
    (d / "items.jsonl").write_text("1\n2\n3\n")
    (d / "A.csv").write_text("1,2\n3,4\n")
    (d / "lockmod.py").write_text("import threading\nLOCK = threading.Lock()\n\n\n"
                                  "def guarded(x):\n    with LOCK:\n        return x\n")
    return d


BAD_INPUTS: dict[str, tuple[list[str], list[str]]] = {
    # case: (arguments after `rqcluster`, texts the one-line message must contain)
    "missing-file": (["enqueue", "matmul", "nothere.npy", "B.npy"], ["nothere.npy", "not found"]),
    "shape-mismatch": (["enqueue", "matmul", "A.npy", "B47.npy"], ["(64, 48)", "(47, 10)"]),
    "object-dtype": (["enqueue", "matmul", "objects.npy", "B.npy"], ["objects.npy", "object"]),
    "not-2-d": (["enqueue", "matmul", "cube.npy", "B.npy"], ["2-D", "(4, 4, 4)"]),
    "unknown-kind": (["enqueue", "nosuch"], ["nosuch"]),
    "unimportable-function": (["enqueue", "map", "no_such_module_q:f", "items.jsonl"],
                              ["no_such_module_q"]),
    "zero-samples": (["enqueue", "montecarlo", "--samples", "0"], ["samples"]),
    "negative-samples": (["enqueue", "montecarlo", "--samples", "-5"], ["samples"]),
    "absurd-samples": (["enqueue", "montecarlo", "--samples", str(10**30)], ["samples"]),
    "not-npy": (["enqueue", "matmul", "A.csv", "B.npy"], ["A.csv"]),
    "unpicklable-function": (["enqueue", "map", "lockmod:guarded", "items.jsonl"],
                             ["lockmod:guarded", "lock"]),
    "bad-config": (["-c", "bad-config.json", "enqueue", "montecarlo", "--samples", "10"],
                   ["slaves[1].performance", "fast"]),
    "unreachable-redis": (["-c", "unreachable.json", "enqueue", "montecarlo", "--samples",
                           "10"], []),  # the message must name the URL: checked below
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_clear_line_and_writes_nothing_to_redis(
        case: str, bad_inputs: Path, idle_broker: Broker) -> None:
    args, expected = BAD_INPUTS[case]
    conn = redis.Redis.from_url(idle_broker.url)
    before = conn.dbsize()

    config = "config.json"
    if args[0] == "-c":
        config, args = args[1], args[2:]
    proc = cli(bad_inputs / config, *args, cwd=bad_inputs)

    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    for text in expected:
        assert text in proc.stderr, describe(proc)
    if case == "unreachable-redis":
        url = json.loads((bad_inputs / config).read_text())["redis"]["url"]
        assert url in proc.stderr, describe(proc)
    if case != "unknown-kind":  # click's own usage error spans a few lines
        assert len(proc.stderr.strip().splitlines()) == 1, describe(proc)
    assert proc.stdout == "", describe(proc)
    assert conn.dbsize() == before
    conn.close()


# --- timeouts and cancelling: a cluster whose slaves never start ----------------------------

@pytest.fixture(scope="module")
def slaveless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """A master with no slave running: every job waits for a live slave."""
    c = NodeCluster(tmp_path_factory.mktemp("slaveless"))
    try:
        c.start_broker()
        c.spawn("assign-reduce", "master")
        yield c
    finally:
        c.stop()


def test_wait_with_a_timeout_exits_3_and_says_the_job_is_still_running(
        slaveless: NodeCluster) -> None:
    proc = slaveless.cli("enqueue", "montecarlo", "--samples", "1000", "--seed", "1",
                         "--wait", "--timeout", "1")

    assert proc.returncode == 3, describe(proc)
    assert "still" in proc.stderr, describe(proc)
    job = re.search(r"job (\S+) still", proc.stderr)
    assert job is not None, describe(proc)
    st = json_out(ok(slaveless.cli("status", job.group(1), "--json")))
    assert st["state"] == "submitted"  # the job goes on after the caller gave up


def test_cancel_ends_a_job_waiting_for_slaves_and_result_then_exits_1(
        slaveless: NodeCluster) -> None:
    job = job_id_of(slaveless.cli("enqueue", "montecarlo", "--samples", "1000"))
    assert json_out(ok(slaveless.cli("status", job, "--json")))["state"] == "submitted"

    cancelled = ok(slaveless.cli("cancel", job))

    assert "cancelled" in cancelled.stdout, describe(cancelled)
    st = json_out(ok(slaveless.cli("status", job, "--json")))
    assert st["state"] == "cancelled"
    result = slaveless.cli("result", job)
    assert result.returncode == 1, describe(result)
    assert "cancelled" in result.stderr, describe(result)
