"""Fixtures of the integration tests: real clusters of real processes, stopped at teardown.

When a test fails, the last lines of every running node's log (and the broker's) are
added to its report, so a failure on a CI machine can be understood from the report alone.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ACTIVE, STOPPED, NodeCluster, cluster_factory


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for cluster in [*ACTIVE, *STOPPED]:
            report.sections.append((f"node logs ({cluster.workdir})", cluster.log_tails()))
    STOPPED.clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """A running cluster shared by one module's tests: broker, master (assign-reduce),
    slave1 (performance 1) and slave2 (performance 2)."""
    c = NodeCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_standard()
        yield c
    finally:
        c.stop()


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NodeCluster]]:
    """A factory of clusters that belong to one test, stopped at its end."""
    with cluster_factory(tmp_path_factory, "own-cluster") as make:
        yield make


@pytest.fixture
def user_module(tmp_path: Path) -> tuple[Path, str]:
    """A user's module written into tmp_path under a unique name; nothing but a process
    started in tmp_path can import it (the nodes run elsewhere). Returns (dir, name)."""
    name = f"usermod_{tmp_path.name.replace('-', '_').lower()}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE.replace("MODULE_NAME", name))
    return tmp_path, name


USER_MODULE = '''\
"""A user's own code, which no slave has installed."""
import importlib.util


def square(x):
    return x * x + 1


def biggest(a, b):
    return max(a, b)


def rowsum(row):
    return int(row.sum())


def importable_here(x):
    """True where this module could be imported by name (it should not be, on a slave)."""
    return importlib.util.find_spec("MODULE_NAME") is not None


def boom(x):
    raise ValueError("bad item 7")
'''
