"""A random-sampling job gives bit-identical results with a slave SIGKILLed mid-job.

The units of the killed slave are moved and run again on other slaves, from scratch: the
answer can only match the fault-free run's if each unit's random stream depends on the
job seed and the unit's index, never on the slave or the attempt.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rqcluster import keys, seeding
from rqcluster.models import UnitRecord
from tests.chaos.ledger import kill_group
from tests.helpers import wait_until
from tests.integration.harness import NodeCluster

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

ITEMS = 300  # noisy over range(ITEMS): about 3 s of unit work
SEED = 20261122
TIMEOUT = 120.0


def noisy(x: int) -> float:
    """x plus a normal draw from the unit's stream; ~10 ms an item, so a kill lands in a
    unit that has drawn already."""
    import time

    import rqcluster
    time.sleep(0.01)
    return x + float(rqcluster.unit_rng().standard_normal())


def _running_on(c: NodeCluster, slave: str) -> bool:
    return any(b'"slave": "%s"' % slave.encode() in v for v in c.conn.hvals(keys.RUNNING))


def _recomputed(units: list[UnitRecord]) -> list[float]:
    """The answer computed here, unit by unit, from nothing but the seed and the units."""
    out: list[float] = []
    for unit in sorted(units, key=lambda u: u.index):
        rng = np.random.default_rng(seeding.unit_seed_sequence(SEED, unit.index))
        out += [x + float(rng.standard_normal()) for x in range(*unit.spec["items"])]
    return out


def test_a_sampling_job_with_a_slave_killed_mid_job_matches_the_fault_free_run_bit_for_bit(
        make_cluster: Callable[..., NodeCluster]) -> None:
    c = make_cluster(slaves=[("slave1", 1), ("slave2", 1), ("slave3", 1)])
    c.start_standard()
    calm = c.api.submit("map", function=noisy, items=range(ITEMS), seed=SEED)
    fault_free = calm.result(timeout=TIMEOUT)

    job = c.api.submit("map", function=noisy, items=range(ITEMS), seed=SEED)
    wait_until(lambda: _running_on(c, "slave1"), 30, interval=0.005)
    units = [UnitRecord.decode(v) for v in c.conn.hvals(keys.units(job.id))]
    kill_group(c.procs["slave1"])
    c._stopped.add("slave1")
    result = job.result(timeout=TIMEOUT)

    record = job.status().record
    assert record.moved >= 1, record  # its units ran again elsewhere, from scratch
    assert result == fault_free  # floats compared exactly
    assert result == _recomputed(units)
    assert result != [float(x) for x in range(ITEMS)]
