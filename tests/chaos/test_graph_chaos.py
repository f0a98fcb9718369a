"""Kill a slave in the middle of a rolling multi-stage job: its units (running, queued,
and the later-stage units placed on it as they became ready) move to the live slaves,
and every unit's effect, dependents released included, counts exactly once."""

from __future__ import annotations

import pytest

from rqcluster import Graph
from tests.chaos.ledger import kill_group
from tests.chaos.test_chaos import TIMEOUT, assert_exact, running_on, three_slaves
from tests.helpers import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

WIDTH = 24


def make(i):
    import time
    time.sleep(0.05)
    return i


def square(x):
    import time
    time.sleep(0.05)
    return x * x


def total(*values):
    return sum(values)


def test_a_slave_killed_mid_graph_job_leaves_every_stage_exact(make_cluster):
    c = three_slaves(make_cluster)
    g = Graph()
    g.stage("make", make, args=[[i] for i in range(WIDTH)])
    squares = g.stage("square", square, after=["make[i]"])
    g.stage("total", total, after=[squares])
    job = c.api.submit("graph", graph=g)
    wait_until(lambda: running_on(c, "slave1"), 30, interval=0.005)
    kill_group(c.procs["slave1"])
    c._stopped.add("slave1")
    assert job.result(timeout=TIMEOUT) == sum(i * i for i in range(WIDTH))
    assert_exact(c, job.id)
