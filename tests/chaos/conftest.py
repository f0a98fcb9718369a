"""Fixtures of the chaos tests: clusters with a short liveness timeout, logs on failure,
and the session's ground-truth tally printed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.chaos.ledger import TALLY
from tests.integration.conftest import pytest_runtest_makereport  # noqa: F401 - logs on failure
from tests.integration.harness import NodeCluster, cluster_factory

# A slave is declared dead 2 s after its last heartbeat (the default is 10 s).
FAST = {"heartbeat-ttl": 2, "units-per-slave": 6}


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NodeCluster]]:
    with cluster_factory(tmp_path_factory, "chaos", options=FAST) as make:
        yield make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.jobs:
        terminalreporter.write_line(TALLY.summary())
