"""The Python API in this process against a real cluster of real node processes.

The functions submitted here live in this test module, which the slaves cannot import
(they run in a directory of their own, and ``tests`` is not installed): every function
reaches them by value.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from rqcluster import Cluster, InputError, JobFailed
from rqcluster.kinds.montecarlo import estimate_locally
from rqcluster.models import JobState
from tests.integration.harness import NodeCluster

pytestmark = pytest.mark.integration

TIMEOUT = 60


@pytest.fixture(scope="module")
def api(cluster: NodeCluster) -> Cluster:
    return Cluster.from_config(cluster.config_path)


@pytest.fixture(scope="module")
def ab() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(6448)
    return (rng.integers(-50, 50, size=(64, 48), dtype=np.int64),
            rng.integers(-50, 50, size=(48, 30), dtype=np.int64))


def square_plus_one(x: int) -> int:
    return x * x + 1


def biggest(a: int, b: int) -> int:
    return max(a, b)


# --- matmul ---------------------------------------------------------------------------------

def test_submit_matmul_with_arrays_returns_the_exact_product_as_an_array(
        api: Cluster, ab: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = ab

    c = api.submit("matmul", a=a, b=b).result(timeout=TIMEOUT)

    assert isinstance(c, np.ndarray) and c.dtype == np.int64
    np.testing.assert_array_equal(c, a @ b)


def test_submit_matmul_with_paths_and_out_returns_the_path_of_the_written_file(
        api: Cluster, ab: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    a, b = ab
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    out = tmp_path / "C.npy"

    got = api.submit("matmul", a=str(tmp_path / "A.npy"), b=tmp_path / "B.npy",
                     out=out).result(timeout=TIMEOUT)

    assert Path(got) == out
    np.testing.assert_array_equal(np.load(out), a @ b)


@pytest.mark.parametrize("to_file", [False, True], ids=["array", "out-file"])
def test_matmul_over_the_memory_budget_runs_as_tiles_and_equals_numpy_exactly(
        api: Cluster, tmp_path: Path, to_file: bool) -> None:
    rng = np.random.default_rng(77)
    a = rng.integers(-2**20, 2**20, size=(70, 40), dtype=np.int64)
    b = rng.integers(-2**20, 2**20, size=(40, 33), dtype=np.int64)  # 10,560 bytes
    out = tmp_path / "C.npy" if to_file else None

    job = api.submit("matmul", a=a, b=b, memory_budget=2000, out=out)  # panels of 3 columns
    got = job.result(timeout=TIMEOUT)

    c = np.load(got) if to_file else got
    assert c.dtype == np.int64
    np.testing.assert_array_equal(c, a @ b)
    record = job.status().record
    assert len(record.params["panels"]) == 11 and record.total % 11 == 0


def test_a_finished_job_reports_done_full_progress_and_cannot_be_cancelled(
        api: Cluster, ab: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = ab
    job = api.submit("matmul", a=a, b=b)
    job.result(timeout=TIMEOUT)

    st = job.status()
    done, total = job.progress()

    assert st.record.id == job.id
    assert st.record.state is JobState.DONE
    assert total is not None and total >= 2
    assert (done, total) == (total, total)
    assert sum(st.per_slave.values()) == total
    assert job.cancel() is False
    assert job.status().record.state is JobState.DONE


def test_a_bad_submission_raises_input_error_and_creates_no_job(
        api: Cluster) -> None:
    before = [r.id for r in api.jobs(limit=1000)]

    with pytest.raises(InputError, match=r"\(3, 4\).*\(5, 2\)"):
        api.submit("matmul", a=np.ones((3, 4)), b=np.ones((5, 2)))

    assert [r.id for r in api.jobs(limit=1000)] == before


# --- montecarlo -----------------------------------------------------------------------------

def test_submit_montecarlo_matches_a_local_run_with_the_same_seed(api: Cluster) -> None:
    samples, seed, unit = 2_000_000, 31337, 100_000

    estimate = api.submit("montecarlo", samples=samples, seed=seed,
                          unit_samples=unit).result(timeout=TIMEOUT)

    assert estimate == estimate_locally(samples, seed, unit)


# --- map ------------------------------------------------------------------------------------

def test_submit_map_with_a_module_function_and_sum(api: Cluster) -> None:
    items = list(range(500))

    total = api.submit("map", function=square_plus_one, items=items,
                       reduce="sum").result(timeout=TIMEOUT)

    assert total == sum(square_plus_one(i) for i in items)


def test_submit_map_with_a_lambda_and_a_reduce_function(api: Cluster) -> None:
    items = [random.Random(5).randrange(10**6) for _ in range(400)]
    offset = 17  # a closure variable travels with the lambda

    biggest_seen = api.submit("map", function=lambda x: x + offset, items=items,
                              reduce=biggest).result(timeout=TIMEOUT)

    assert biggest_seen == max(items) + offset


# --- @cluster.task --------------------------------------------------------------------------

def test_task_compute_and_submit_run_the_function_on_a_slave(api: Cluster) -> None:
    @api.task
    def cube(x: int) -> int:
        return x ** 3

    assert cube(4) == 64  # still a plain function here
    assert cube.compute(7, timeout=TIMEOUT) == 343
    handle = cube.submit(-3)
    assert handle.result(timeout=TIMEOUT) == -27


def test_task_map_over_a_range_with_sum_equals_the_local_sum(api: Cluster) -> None:
    @api.task
    def f(i: int) -> int:
        return 3 * i * i - i

    assert f.map(range(1000), reduce="sum", timeout=TIMEOUT) == sum(f(i) for i in range(1000))


def test_task_map_returns_a_list_in_input_order(api: Cluster) -> None:
    words = [f"w{n}" for n in random.Random(9).sample(range(10_000), 700)]

    @api.task
    def shout(word: str) -> str:
        return word.upper() + "!"

    assert shout.map(words, timeout=TIMEOUT) == [w.upper() + "!" for w in words]


def test_a_failing_task_raises_job_failed_with_the_remote_traceback(api: Cluster) -> None:
    @api.task
    def fragile(x: int) -> float:
        return 1 / (x - 5)

    with pytest.raises(JobFailed) as failure:
        fragile.map(range(10), reduce="sum", timeout=TIMEOUT)

    message = str(failure.value)
    assert "ZeroDivisionError" in message
    assert "Traceback" in message
    assert "fragile" in message  # the remote frame of the user's function


def test_task_compute_takes_a_numpy_array_and_returns_one(api: Cluster) -> None:
    @api.task
    def normalise(v):
        return v / v.sum()

    got = normalise.compute(np.array([1.0, 3.0]), timeout=60)
    np.testing.assert_array_equal(got, np.array([0.25, 0.75]))
