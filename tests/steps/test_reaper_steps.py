"""The reaper one pass at a time, against a real redis-server.

Slaves and workers are simulated by their records (heartbeats, worker status, the start
and completion scripts that real slaves run), so every rule is checked without waiting
for a TTL: units of a silent slave move, a unit whose worker died moves, a unit that
vanished in delivery moves once confirmed, a unit killing every worker fails its job,
and whatever moves is counted once however many copies finish.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

from rqcluster import enqueue, events, execute, keys, liveness
from rqcluster.assign import Assigner
from rqcluster.config import ClusterConfig
from rqcluster.jobs import get_record, get_result
from rqcluster.models import JobState
from rqcluster.reaper import Lost, Reaper, Suspects, pick_targets, running_lost
from tests.steps.test_pipeline_steps import drain, live_config, units_of


@pytest.fixture
def config(redis_server, redis_conn: redis.Redis) -> ClusterConfig:
    return live_config(redis_server, redis_conn, {"s1": 1, "s2": 1, "s3": 2})


def placed_matmul(conn: redis.Redis, config: ClusterConfig) -> tuple[str, np.ndarray]:
    a = np.arange(48 * 6).reshape(48, 6) - 50
    b = np.arange(6 * 4).reshape(6, 4) * 7
    job_id = enqueue.submit(conn, "matmul", a=a, b=b)
    Assigner(conn, config, "master").step(timeout=0.1)
    return job_id, a @ b


def run_everything(conn: redis.Redis, job_id: str) -> list[str]:
    """Run every unit on the slave now holding it, as its worker would."""
    return [execute.execute_unit(conn, job_id, u.index, u.slave) for u in units_of(conn, job_id)]


def start_without_finishing(conn: redis.Redis, job_id: str, index: int, slave: str,
                            worker: str, rest: list[int] | None = None) -> None:
    """What a worker does before it is killed mid-unit: the start script only."""
    status = liveness.WorkerStatus(slave, worker)
    status.begin(keys.unit_member(job_id, index))
    start = execute._unit_scripts(conn).start
    start(keys=[keys.job(job_id), keys.units(job_id), keys.attempts(job_id), keys.RUNNING,
                keys.worker(worker), keys.partials(job_id), keys.slave_units(slave)],
          args=[index, keys.unit_member(job_id, index),
                liveness.running_entry(worker, slave, rest),
                status.encode(), 60_000])


def test_units_of_a_silent_slave_move_to_live_slaves_and_the_job_completes_exactly(
        redis_conn, config):
    job_id, expected = placed_matmul(redis_conn, config)
    on_s1 = [u.index for u in units_of(redis_conn, job_id) if u.slave == "s1"]
    assert on_s1
    redis_conn.delete(keys.heartbeat("s1"))

    assert Reaper(redis_conn, config).sweep() == len(on_s1)

    now = {u.index: u.slave for u in units_of(redis_conn, job_id)}
    assert all(now[i] in ("s2", "s3") for i in on_s1)
    assert redis_conn.scard(keys.slave_units("s1")) == 0
    assert not redis_conn.exists(keys.rq_queue_key("s1"))  # its stale RQ jobs are gone
    run_everything(redis_conn, job_id)
    drain(redis_conn, config)
    np.testing.assert_array_equal(get_result(redis_conn, job_id), expected)
    record = get_record(redis_conn, job_id)
    assert sum(int(v) for v in redis_conn.hvals(keys.slave_counts(job_id))) == record.total
    kinds = [e.event for e in events.recent(redis_conn, 50)]
    assert "slave-silent" in kinds and kinds.count("unit-moved") == len(on_s1)


def test_a_slave_that_comes_back_skips_the_units_moved_off_it(redis_conn, config):
    job_id, _ = placed_matmul(redis_conn, config)
    first = next(u for u in units_of(redis_conn, job_id) if u.slave == "s1")
    redis_conn.delete(keys.heartbeat("s1"))
    Reaper(redis_conn, config).sweep()
    liveness.beat(redis_conn, "s1", 60)
    outcome = execute.execute_unit(redis_conn, job_id, first.index, "s1")
    assert outcome == f"skipped: unit {first.index} of job {job_id} is moved"


def test_a_unit_whose_worker_died_moves_and_its_late_result_counts_once(redis_conn, config):
    job_id, expected = placed_matmul(redis_conn, config)
    unit = units_of(redis_conn, job_id)[0]
    start_without_finishing(redis_conn, job_id, unit.index, unit.slave, "w-old")
    reaper = Reaper(redis_conn, config)
    assert reaper.sweep() == 0  # its worker is alive: nothing to do
    redis_conn.delete(keys.worker("w-old"))  # its status expired: the worker died

    assert reaper.sweep() == 1
    moved_to = units_of(redis_conn, job_id)[0].slave
    assert not redis_conn.hexists(keys.RUNNING, keys.unit_member(job_id, unit.index))
    assert redis_conn.hget(keys.attempts(job_id), f"{unit.index}:lost") == \
        f'["{unit.slave}"]'.encode()
    run_everything(redis_conn, job_id)  # runs the moved copy on its new slave
    assert moved_to in {s.name for s in config.slaves}
    drain(redis_conn, config)
    np.testing.assert_array_equal(get_result(redis_conn, job_id), expected)
    record = get_record(redis_conn, job_id)
    assert sum(int(v) for v in redis_conn.hvals(keys.slave_counts(job_id))) == record.total


def test_a_unit_that_kills_every_worker_fails_its_job_after_max_attempts(redis_conn, config):
    job_id, _ = placed_matmul(redis_conn, config)
    index = units_of(redis_conn, job_id)[0].index
    reaper = Reaper(redis_conn, config)
    killed = []
    for attempt in range(1, 4):
        slave = units_of(redis_conn, job_id)[0].slave
        killed.append(slave)
        start_without_finishing(redis_conn, job_id, index, slave, f"w{attempt}")
        redis_conn.delete(keys.worker(f"w{attempt}"))
        reaper.sweep()
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.FAILED
    assert record.error is not None and record.error["unit"] == index
    assert record.error["slaves"] == killed
    assert f"unit {index} was running when its worker died 3 times" in record.error["message"]
    assert (record.retries, record.lost, record.moved) == (2, 3, 2)
    assert redis_conn.hlen(keys.RUNNING) == 0
    assert all(redis_conn.scard(keys.slave_units(s.name)) == 0 for s in config.slaves)


def test_a_unit_lost_in_delivery_moves_only_once_confirmed(redis_conn, config):
    job_id, _ = placed_matmul(redis_conn, config)
    on_s1 = [u.index for u in units_of(redis_conn, job_id) if u.slave == "s1"]
    redis_conn.delete(keys.rq_queue_key("s1"))  # dequeued, then the worker died
    reaper = Reaper(redis_conn, config)
    assert reaper.sweep(now=100.0) == 0  # suspected, not yet confirmed
    assert reaper.sweep(now=100.0 + config.options.heartbeat_ttl) == len(on_s1)
    for u in units_of(redis_conn, job_id):
        if u.index in on_s1:  # queued again (on whichever slave drains soonest)
            queued = redis_conn.lrange(keys.rq_queue_key(u.slave), 0, -1)
            assert f"{keys.rq_job_id(job_id, u.index)}-m1".encode() in queued


def test_nothing_moves_while_every_slave_is_healthy(redis_conn, config):
    job_id, _ = placed_matmul(redis_conn, config)
    reaper = Reaper(redis_conn, config)
    assert reaper.sweep(now=0.0) == 0
    assert reaper.sweep(now=1000.0) == 0
    run_everything(redis_conn, job_id)
    assert reaper.sweep(now=2000.0) == 0


def test_units_of_a_silent_slave_wait_when_no_slave_is_live(redis_conn, config):
    job_id, _ = placed_matmul(redis_conn, config)
    for s in config.slaves:
        redis_conn.delete(keys.heartbeat(s.name))
    assert Reaper(redis_conn, config).sweep() == 0
    assert get_record(redis_conn, job_id).state is JobState.RUNNING


def test_two_reapers_racing_move_each_unit_once(redis_conn, config):
    job_id, _ = placed_matmul(redis_conn, config)
    held = redis_conn.scard(keys.slave_units("s1"))
    redis_conn.delete(keys.heartbeat("s1"))
    first, second = Reaper(redis_conn, config), Reaper(redis_conn, config)
    assert first.sweep() + second.sweep() == held
    total = sum(redis_conn.scard(keys.slave_units(s.name)) for s in config.slaves)
    assert total == get_record(redis_conn, job_id).total


def test_the_rest_of_a_batch_whose_worker_died_moves_with_the_running_unit(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=400 * 50, seed=2, unit_samples=50)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    on_s1 = sorted(u.index for u in units_of(redis_conn, job_id) if u.slave == "s1")
    batch = on_s1[:5]
    start_without_finishing(redis_conn, job_id, batch[0], "s1", "w1", rest=batch[1:])
    redis_conn.delete(keys.worker("w1"))
    assert Reaper(redis_conn, config).sweep() == 5  # at once: no confirmation needed
    owners = {u.index: u.slave for u in units_of(redis_conn, job_id)}
    for i in batch:  # queued again, each on its own
        queued = redis_conn.lrange(keys.rq_queue_key(owners[i]), 0, -1)
        assert f"{keys.rq_job_id(job_id, i)}-m1".encode() in queued
    assert all(owners[i] == "s1" for i in on_s1[5:])
    record = get_record(redis_conn, job_id)
    assert (record.moved, record.lost) == (5, 1)  # only the running one was "lost"


def test_running_lost_tells_dead_workers_from_mismatched_ones():
    running = {"j:1": {"worker": "a", "slave": "s1"}, "j:2": {"worker": "b", "slave": "s2"},
               "j:3": {"worker": "c", "slave": "s2"}}
    workers = {"a": None, "b": {"unit": "j:9"}, "c": {"unit": "j:3"}}
    gone, mismatched = running_lost(running, workers)
    assert gone == [Lost("j:1", "s1", "worker-died", "a")]
    running["j:1"]["rest"] = [4, 5, 2]  # j:2 runs elsewhere: not lost with a's batch
    gone, _ = running_lost(running, workers)
    assert gone == [Lost("j:1", "s1", "worker-died", "a"), Lost("j:4", "s1", "batch-lost"),
                    Lost("j:5", "s1", "batch-lost")]
    assert mismatched == [Lost("j:2", "s2", "completion-lost", "b")]


def test_suspects_are_confirmed_only_after_the_delay_and_forgotten_when_cleared():
    s = Suspects()
    assert s.confirm(10.0, {"x", "y"}, after=5) == set()
    assert s.confirm(14.0, {"x", "y"}, after=5) == set()
    assert s.confirm(15.0, {"x"}, after=5) == {"x"}
    assert s.confirm(16.0, {"y"}, after=5) == set()  # y reappeared: its clock restarted


def test_pick_targets_spreads_by_performance_and_queue_length():
    assert pick_targets(6, {"a": 1, "b": 2}, {}) == ["b", "a", "b", "b", "a", "b"]
    assert pick_targets(2, {"a": 1, "b": 1}, {"a": 5, "b": 0}) == ["b", "b"]


def test_a_batch_stranded_in_rqs_intermediate_list_moves_once_confirmed(redis_conn, config):
    """A worker that died between RQ's dequeue (LMOVE into the intermediate list) and the
    first unit's start leaves its batch there; the slave, back under a new worker, is idle."""
    enqueue.submit(redis_conn, "montecarlo", samples=400 * 50, seed=3, unit_samples=50)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    queue = keys.rq_queue_key("s1")
    stranded = redis_conn.llen(queue)
    for _ in range(stranded):
        redis_conn.lmove(queue, f"{queue}:intermediate", "LEFT", "RIGHT")
    held = redis_conn.scard(keys.slave_units("s1"))
    reaper = Reaper(redis_conn, config)
    assert reaper.sweep(now=50.0) == 0
    assert reaper.sweep(now=50.0 + config.options.heartbeat_ttl) == held
