"""Kill real processes mid-job and check exact answers: nothing lost, nothing counted twice.

Every test runs real nodes (`rqcluster node` processes) on a real redis-server with a
2 s liveness timeout, kills something for real (SIGKILL of a node's whole process group,
SIGSTOP, redis-server itself), and then checks the job's answer exactly (integer sums,
integer matrices, or bit-identical floats) and its ledger (``ledger.py``): every unit's
effect counted exactly once. Kill points are drawn from a seeded generator
(``RQCLUSTER_CHAOS_SEED``), printed on failure, so a failing run can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import numpy as np
import pytest

from rqcluster import keys
from rqcluster.kinds.montecarlo import estimate_locally
from rqcluster.models import JobState
from tests.chaos.ledger import TALLY, event_log, kill_group, ledger
from tests.helpers import wait_until
from tests.integration.harness import NodeCluster, describe, wait_for_exit

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SEED = int(os.environ.get("RQCLUSTER_CHAOS_SEED", "20261122"))
FREEZE_SECONDS = float(os.environ.get("RQCLUSTER_CHAOS_FREEZE", "30"))
TTL = 2.0
ITEMS = 900  # slow_square over range(ITEMS): about 9 s of unit work
TIMEOUT = 150.0
OUTAGE = 0.5  # seconds redis-server stays down after each crash


def slow_square(x: int) -> int:
    """A map function taking ~10 ms an item, so kills land inside units."""
    import time
    time.sleep(0.01)
    return x * x


def poison(x: int) -> int:
    """Kills the process that runs it when it meets item 13; harmless otherwise."""
    import os
    import signal
    if x == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


EXPECTED = sum(x * x for x in range(ITEMS))


def three_slaves(make_cluster: Callable[..., NodeCluster], **kwargs: object) -> NodeCluster:
    c = make_cluster(slaves=[("slave1", 1), ("slave2", 1), ("slave3", 1)], **kwargs)
    c.start_standard()
    return c


def running_on(c: NodeCluster, slave: str) -> bool:
    return any(b'"slave": "%s"' % slave.encode() in v for v in c.conn.hvals(keys.RUNNING))


def done_by(c: NodeCluster, slave: str) -> int:
    return int(c.conn.hget(keys.SLAVE_STATS, slave) or 0)


def completed(c: NodeCluster) -> int:
    """Units completed by all slaves so far (every job)."""
    return sum(int(v) for k, v in c.conn.hgetall(keys.SLAVE_STATS).items() if b":" not in k)


def assert_exact(c: NodeCluster, job_id: str) -> None:
    entry = TALLY.add(ledger(c.conn, job_id))
    assert (entry.lost, entry.double_counted) == (0, 0), entry
    assert entry.runs >= entry.units, entry


# --- 1. a slave killed, never restarted ---------------------------------------------------

@pytest.mark.parametrize("when", ["mid-unit", "right-after-a-unit"])
def test_a_killed_slave_s_units_move_to_live_slaves_and_the_job_completes_exactly(
        make_cluster, when):
    c = three_slaves(make_cluster)
    job = c.api.submit("map", function=slow_square, items=range(ITEMS), reduce="sum")
    if when == "mid-unit":
        wait_until(lambda: running_on(c, "slave1"), 30, interval=0.005)
    else:
        wait_until(lambda: done_by(c, "slave1") >= 1, 30, interval=0.002)
    killed_at = time.time()
    kill_group(c.procs["slave1"])
    c._stopped.add("slave1")

    assert job.result(timeout=TIMEOUT) == EXPECTED
    assert_exact(c, job.id)
    log = event_log(c.conn)
    silent = [e for e in log if e.event == "slave-silent" and e.fields["slave"] == "slave1"]
    moved = [e for e in log if e.event == "unit-moved" and e.fields["slave"] == "slave1"]
    assert silent and moved, [e.to_dict() for e in log]
    # Moved within the liveness timeout (2 s) and a few seconds, not RQ's 420 s.
    assert silent[0].at - killed_at < TTL + 10
    assert {e.fields["to"] for e in moved} <= {"slave2", "slave3"}


# --- 2. a slave frozen for longer than the liveness timeout ------------------------------

def test_a_frozen_slave_s_units_are_moved_and_its_late_results_count_at_most_once(
        make_cluster):
    c = three_slaves(make_cluster)
    job = c.api.submit("map", function=slow_square, items=range(ITEMS), reduce="sum")
    wait_until(lambda: running_on(c, "slave1"), 30, interval=0.005)
    kill_group(c.procs["slave1"], signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        assert job.result(timeout=TIMEOUT) == EXPECTED
        assert any(e.event == "unit-moved" and e.fields["slave"] == "slave1"
                   for e in event_log(c.conn, job.id))
        time.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - frozen_at)))
    finally:
        kill_group(c.procs["slave1"], signal.SIGCONT)
    # It wakes up mid-unit, finishes it late, and comes back to work.
    c.wait_for_slaves(["slave1", "slave2", "slave3"], timeout=30)
    second = c.api.submit("map", function=slow_square, items=range(300), reduce="sum")
    assert second.result(timeout=TIMEOUT) == sum(x * x for x in range(300))
    assert job.result() == EXPECTED
    assert_exact(c, job.id)
    assert_exact(c, second.id)


# --- 3. churn --------------------------------------------------------------------------

def test_slaves_killed_and_restarted_at_random_for_a_whole_job_leave_it_exact(make_cluster):
    rng = random.Random(SEED)
    c = three_slaves(make_cluster)
    started = time.monotonic()
    calm = c.api.submit("map", function=slow_square, items=range(ITEMS), reduce="sum")
    assert calm.result(timeout=TIMEOUT) == EXPECTED
    fault_free = time.monotonic() - started

    started = time.monotonic()
    job = c.api.submit("map", function=slow_square, items=range(ITEMS), reduce="sum")
    kills = 0
    while not job.status().record.state.terminal:
        time.sleep(rng.uniform(0.3, 1.5))  # a random moment: the kill schedule is the input
        victim = rng.choice(["slave1", "slave2", "slave3"])
        kill_group(c.procs[victim])
        kills += 1
        time.sleep(rng.uniform(0.0, 1.0))
        c.spawn("slave", victim)
    assert job.result(timeout=TIMEOUT) == EXPECTED, f"seed {SEED}"
    churned = time.monotonic() - started
    assert_exact(c, job.id)
    print(f"churn: {kills} kills; {churned:.1f} s against {fault_free:.1f} s fault-free "
          f"({churned / fault_free:.1f}x)")


# --- 4. master-combine killed -------------------------------------------------------------

def split_masters(make_cluster: Callable[..., NodeCluster]) -> NodeCluster:
    c = make_cluster(master_combine="combiner")
    c.start_broker()
    c.spawn("assign", "master")
    c.spawn("reduce", "combiner")
    for s in c.config.slaves:
        c.spawn("slave", s.name)
    c.wait_for_slaves([s.name for s in c.config.slaves])
    return c


MC = {"samples": 24 * 2**20, "seed": 7, "unit_samples": 2**20}


@pytest.mark.parametrize("when", ["while-folding", "after-the-counter-reached-zero"])
def test_a_killed_combiner_restarted_stores_a_bit_identical_result_once(make_cluster, when):
    c = split_masters(make_cluster)
    job = c.api.submit("montecarlo", **MC)
    combiner = c.procs["combiner"]
    if when == "while-folding":
        wait_until(lambda: sum(int(v) for v in c.conn.hvals(keys.COMBINER_STATS)) >= 2, 60,
                   interval=0.002)
    else:  # frozen first, so it cannot store the result before it dies
        wait_until(lambda: sum(int(v) for v in c.conn.hvals(keys.COMBINER_STATS)) >= 1, 60,
                   interval=0.002)
        kill_group(combiner, signal.SIGSTOP)
        wait_until(lambda: c.conn.hget(keys.job(job.id), "remaining") == b"0", 60)
        assert c.conn.hget(keys.job(job.id), "state") == b"running"
    kill_group(combiner)
    c._stopped.add("combiner")
    c.spawn("reduce", "combiner", key="combiner-restarted")

    assert job.result(timeout=TIMEOUT) == estimate_locally(**MC)
    assert_exact(c, job.id)
    done = [e for e in event_log(c.conn, job.id) if e.event == "job-done"]
    assert len(done) == 1


# --- 5. master-assign killed mid-split ----------------------------------------------------

def test_a_master_assign_killed_mid_split_places_every_unit_exactly_once(make_cluster):
    c = make_cluster(master_combine="combiner")
    c.start_broker()
    for s in c.config.slaves:
        c.spawn("slave", s.name)
    c.spawn("reduce", "combiner")
    c.wait_for_slaves([s.name for s in c.config.slaves])
    params = {"samples": 3000 * 4096, "seed": 3, "unit_samples": 4096}
    job = c.api.submit("montecarlo", **params)  # 3,000 units: a split that takes a while
    master = c.spawn("assign", "master")
    wait_until(lambda: c.conn.llen(keys.assigning("master")) == 1, 30, interval=0.001)
    kill_group(master)
    c._stopped.add("master")
    assert c.conn.hget(keys.job(job.id), "state") == b"submitted"
    c.spawn("assign", "master", key="master-restarted")

    assert job.result(timeout=TIMEOUT) == estimate_locally(**params)
    entry = ledger(c.conn, job.id)
    assert entry.units == 3000 and entry.runs == 3000  # each placed (and run) exactly once
    assert_exact(c, job.id)


# --- 6. redis-server killed -------------------------------------------------------------

def test_three_redis_crashes_mid_job_are_survived_by_every_process(make_cluster):
    c = three_slaves(make_cluster)
    a = np.arange(300 * 200, dtype=np.int64).reshape(300, 200) % 97 - 40
    b = np.arange(200 * 150, dtype=np.int64).reshape(200, 150) % 89 - 30
    items = 2 * ITEMS  # long enough that all three crashes land mid-job
    job = c.api.submit("map", function=slow_square, items=range(items), reduce="sum")
    product = c.api.submit("matmul", a=a, b=b)
    for _ in range(3):
        before = completed(c)
        wait_until(lambda b=before: completed(c) >= b + 2, 60, interval=0.01)  # progress
        assert not job.status().record.state.terminal
        c.broker.kill()
        TALLY.kills += 1
        time.sleep(OUTAGE)  # the length of the outage is the fault, not a wait
        c.broker.start()
        c._conn = None
    assert job.result(timeout=TIMEOUT) == sum(x * x for x in range(items))
    np.testing.assert_array_equal(product.result(timeout=TIMEOUT), a @ b)
    c.check_alive()  # nobody died of it
    assert_exact(c, job.id)
    assert_exact(c, product.id)


# --- 7. a poison unit ----------------------------------------------------------------------

def test_a_unit_that_kills_its_process_fails_its_job_after_3_attempts_and_nothing_else(
        make_cluster):
    c = three_slaves(make_cluster)
    bad = c.api.submit("map", function=poison, items=range(100), reduce="sum")
    good = c.api.submit("map", function=slow_square, items=range(300), reduce="sum")

    record = wait_until(lambda: (r := bad.status().record).state.terminal and r, TIMEOUT)
    assert record.state is JobState.FAILED
    error = record.error
    assert "was running when its worker died 3 times" in error["message"], error
    assert len(error["slaves"]) == 3 and set(error["slaves"]) <= {"slave1", "slave2", "slave3"}
    assert f"unit {error['unit']}" in error["message"]
    assert good.result(timeout=TIMEOUT) == sum(x * x for x in range(300))
    assert_exact(c, good.id)
    # Every slave is still there: its node restarted the worker the unit killed.
    c.wait_for_slaves(["slave1", "slave2", "slave3"], timeout=60)
    c.check_alive()


# --- 8. no live slave ----------------------------------------------------------------------

def test_enqueue_with_no_live_slave_says_so_and_a_slave_started_later_gets_the_work(
        make_cluster):
    c = make_cluster(slaves=[("slave1", 1)])
    c.start_broker()
    c.spawn("assign-reduce", "master")
    refused = c.cli("enqueue", "montecarlo", "--samples", "1000", "--wait-for-slaves", "1")
    assert refused.returncode == 3, describe(refused)
    assert "no slave became live within 1 s; nothing was submitted" in refused.stderr
    assert c.conn.zcard(keys.JOBS_INDEX) == 0 and not list(c.conn.scan_iter("rqc:job:*"))
    assert c.conn.llen(keys.SUBMITTED) == 0

    queued = c.cli("enqueue", "montecarlo", "--samples", "1000", "--seed", "5")
    assert queued.returncode == 0, describe(queued)
    assert "warning: no live slave" in queued.stderr and "waits until one starts" in \
        queued.stderr
    job_id = queued.stdout.strip()
    c.spawn("slave", "slave1")
    done = c.cli("result", job_id, "--wait", "--timeout", "60", "--json")
    assert done.returncode == 0, describe(done)


def test_wait_for_slaves_submits_once_a_slave_is_live(make_cluster):
    import subprocess
    import sys

    from tests.integration.harness import clean_env
    c = make_cluster(slaves=[("slave1", 1)])
    c.start_broker()
    c.spawn("assign-reduce", "master")
    waiting = subprocess.Popen(
        [sys.executable, "-m", "rqcluster", "-c", str(c.config_path), "enqueue",
         "montecarlo", "--samples", "1000", "--wait-for-slaves", "60", "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    assert wait_for_exit(waiting, 1.0) is None  # still waiting for a slave
    c.spawn("slave", "slave1")
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, err
    assert "waiting up to 60 s" in err


# --- 9. duplicate and foreign results ----------------------------------------------------

def test_duplicate_and_foreign_results_in_the_stream_are_ignored_and_logged(make_cluster):
    c = three_slaves(make_cluster)
    job = c.api.submit("map", function=slow_square, items=range(ITEMS), reduce="sum")
    wait_until(lambda: c.conn.scard(keys.folded(job.id)) >= 1, 60, interval=0.01)
    folded = int(c.conn.srandmember(keys.folded(job.id)))
    c.conn.xadd(keys.RESULTS_STREAM, {"job": job.id, "unit": folded, "slave": "slave1"})
    c.conn.xadd(keys.RESULTS_STREAM, {"job": "0000feedface", "unit": 1, "slave": "evil"})
    c.conn.xadd(keys.RESULTS_STREAM, {"job": job.id, "unit": 10_000, "slave": "evil"})

    assert job.result(timeout=TIMEOUT) == EXPECTED
    assert_exact(c, job.id)
    ignored = [e for e in event_log(c.conn) if e.event == "result-ignored"]
    assert len(ignored) == 3, [e.to_dict() for e in ignored]
    log = (c.logs / "master.log").read_text()
    assert log.count("ignored results entry") == 3


# --- batches ------------------------------------------------------------------------------

@pytest.mark.parametrize("restart", [False, True])
def test_a_slave_killed_mid_batch_loses_no_unit_of_the_batch(make_cluster, restart):
    """Tiny units travel up to 64 to an RQ job: the rest of a batch whose worker died is neither
    queued nor running; the reaper still finds it (dead slave, or idle slave once back)."""
    c = three_slaves(make_cluster)
    params = {"samples": 600 * 2**16, "seed": 17, "unit_samples": 2**16}
    job = c.api.submit("montecarlo", **params)
    wait_until(lambda: done_by(c, "slave1") >= 3, 60, interval=0.002)
    kill_group(c.procs["slave1"])
    if restart:
        c.spawn("slave", "slave1")
    else:
        c._stopped.add("slave1")
    assert job.result(timeout=TIMEOUT) == estimate_locally(**params)
    assert_exact(c, job.id)
