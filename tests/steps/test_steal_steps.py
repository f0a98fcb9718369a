"""Stealing, draining, joining and observing one pass at a time, against a real redis-server.

Slaves are simulated by their records and by the scripts real slaves run
(``execute.execute_units`` is what a slave's RQ batch job calls), so every rule is checked
without waiting: an idle slave takes queued units from a busy one, a running unit never
moves, the source's batch skips what was taken, a draining slave's queue moves, a joined
slave gets work, and every unit is counted exactly once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import redis

from rqcluster import adaptive, enqueue, execute, keys, liveness, membership
from rqcluster.assign import Assigner
from rqcluster.config import ClusterConfig
from rqcluster.jobs import get_record, get_result
from rqcluster.steal import Stealer
from tests.steps.test_pipeline_steps import drain, live_config, units_of
from tests.steps.test_reaper_steps import start_without_finishing


@pytest.fixture
def config(redis_server, redis_conn: redis.Redis) -> ClusterConfig:
    return live_config(redis_server, redis_conn, {"s1": 1, "s2": 1, "s3": 1})


def placed(conn: redis.Redis, config: ClusterConfig, rows: int = 48) -> tuple[str, np.ndarray]:
    a = np.arange(rows * 6).reshape(rows, 6) - 50
    b = np.arange(6 * 4).reshape(6, 4) * 7
    job_id = enqueue.submit(conn, "matmul", a=a, b=b)
    Assigner(conn, config, "master").step(timeout=0.1)
    return job_id, a @ b


def on(conn: redis.Redis, job_id: str, slave: str) -> list[int]:
    return [u.index for u in units_of(conn, job_id) if u.slave == slave]


def queued_unit_jobs(conn: redis.Redis, slave: str) -> list[str]:
    return [i.decode() for i in conn.lrange(keys.rq_queue_key(slave), 0, -1)]


def test_idle_slaves_steal_queued_units_the_source_skips_them_and_each_counts_once(
        redis_conn, config):
    job_id, expected = placed(redis_conn, config)
    batches = {s.name: on(redis_conn, job_id, s.name) for s in config.slaves}
    for fast in ("s1", "s2"):  # s1 and s2 finish everything; s3 has not started
        execute.execute_units(redis_conn, job_id, batches[fast], fast)
    # The plan uses each slave's measured speed in the job; in-process timings of tiny
    # units are noise, so give s1 and s2 the equal busy time a real run has on average.
    assert len(batches["s1"]) == len(batches["s2"])
    redis_conn.hset(keys.job(job_id), mapping={"busy:s1": 1.0, "busy:s2": 1.0})
    before = len(batches["s3"])

    moves = Stealer(redis_conn, config).step()

    assert moves and {m.source for m in moves} == {"s3"}
    assert {m.target for m in moves} == {"s1", "s2"} and {m.why for m in moves} == {"stolen"}
    # the units stolen are the last s3 would have run, and s3 keeps a third, rounded up
    # (three equal slaves: nothing finishes sooner by moving more)
    stolen = sorted(int(m.member.rsplit(":", 1)[1]) for m in moves)
    assert stolen == batches["s3"][-len(stolen):]
    assert len(on(redis_conn, job_id, "s3")) == before - len(moves) == -(-before // 3)
    for m in moves:  # each waits on its thief's queue as a one-unit RQ job
        index = int(m.member.rsplit(":", 1)[1])
        assert any(rq.startswith(f"rqc-{job_id}-{index}-m") for rq in
                   queued_unit_jobs(redis_conn, m.target))
    record = get_record(redis_conn, job_id)
    assert (record.stolen, record.moved, record.lost) == (len(moves), 0, 0)
    assert int(redis_conn.hget(keys.SLAVE_STATS, "s3:stolen")) == len(moves)
    assert redis_conn.hget(keys.SLAVE_STATS, "s3:lost") is None  # a steal is no loss

    # s3's original batch runs: what was stolen is skipped; the thieves run theirs
    outcomes = execute.execute_units(redis_conn, job_id, batches["s3"], "s3")
    assert sum("is moved" in o for o in outcomes) == len(moves)
    for m in moves:
        execute.execute_unit(redis_conn, job_id, int(m.member.rsplit(":", 1)[1]), m.target)
    drain(redis_conn, config)
    np.testing.assert_array_equal(get_result(redis_conn, job_id), expected)
    counts = {k.decode(): int(v) for k, v in redis_conn.hgetall(keys.slave_counts(job_id)).items()}
    assert sum(counts.values()) == get_record(redis_conn, job_id).total
    assert counts["s3"] == before - len(moves)


def test_a_running_unit_is_never_stolen_and_nothing_moves_while_nobody_is_idle(
        redis_conn, config):
    job_id, _ = placed(redis_conn, config)
    assert Stealer(redis_conn, config).step() == []  # every slave has a queue
    for fast in ("s1", "s2"):
        execute.execute_units(redis_conn, job_id, on(redis_conn, job_id, fast), fast)
    mine = on(redis_conn, job_id, "s3")
    start_without_finishing(redis_conn, job_id, mine[-1], "s3", "w3")
    moves = Stealer(redis_conn, config).step()
    assert moves
    assert f"{job_id}:{mine[-1]}" not in {m.member for m in moves}
    assert mine[-1] in on(redis_conn, job_id, "s3")


def test_stealing_can_be_switched_off(redis_server, redis_conn, config):
    from dataclasses import replace
    off = replace(config, options=replace(config.options, steal=False))
    job_id, _ = placed(redis_conn, off)
    for fast in ("s1", "s2"):
        execute.execute_units(redis_conn, job_id, on(redis_conn, job_id, fast), fast)
    assert Stealer(redis_conn, off).step() == []


def test_a_draining_slave_gets_no_new_units_and_its_queue_moves_but_not_its_running_unit(
        redis_conn, config):
    job_id, expected = placed(redis_conn, config)
    mine = on(redis_conn, job_id, "s3")
    start_without_finishing(redis_conn, job_id, mine[0], "s3", "w3")
    assert membership.drain(redis_conn, config, "s3") == {"slave": "s3", "alive": True,
                                                           "held": len(mine)}
    moves = Stealer(redis_conn, config).step()
    assert sorted(int(m.member.rsplit(":", 1)[1]) for m in moves) == mine[1:]
    assert {m.why for m in moves} == {"drained"} and {m.target for m in moves} <= {"s1", "s2"}
    assert on(redis_conn, job_id, "s3") == [mine[0]]  # the running unit finishes there
    assert get_record(redis_conn, job_id).drained == len(mine) - 1

    second, _ = placed(redis_conn, config)
    assert on(redis_conn, second, "s3") == []  # nothing new is placed on it
    assert set(membership.live_shares(redis_conn, config)) == {"s1", "s2"}
    membership.announce(redis_conn, "s3", None, joining=False)  # started again: undrained
    assert "s3" in membership.live_shares(redis_conn, config)


def test_a_joined_slave_gets_units_and_is_forgotten_once_drained_and_gone(redis_conn, config):
    membership.announce(redis_conn, "new", 2.0, joining=True)
    assert "new" not in membership.live_shares(redis_conn, config)  # no heartbeat yet
    liveness.beat(redis_conn, "new", 60)
    assert membership.live_shares(redis_conn, config)["new"] == 2.0
    job_id, _ = placed(redis_conn, config)
    assert len(on(redis_conn, job_id, "new")) == 2 * len(on(redis_conn, job_id, "s1"))
    assert redis_conn.hget(keys.JOINED, "new") is not None
    assert b"password" not in redis_conn.hget(keys.JOINED, "new")

    membership.drain(redis_conn, config, "new")
    execute.execute_units(redis_conn, job_id, on(redis_conn, job_id, "new")[:1], "new")
    moves = Stealer(redis_conn, config).step()  # the rest of its queue moves off
    assert len(moves) == len(on(redis_conn, job_id, "new")) - 1 + len(moves) > 0
    assert redis_conn.scard(keys.slave_units("new")) == 0
    redis_conn.delete(keys.heartbeat("new"))  # its worker stopped
    Stealer(redis_conn, config).step()
    assert redis_conn.hget(keys.JOINED, "new") is None
    assert not redis_conn.sismember(keys.DRAINING, "new")


def test_a_finished_job_is_observed_once_and_sizes_the_next_job_of_an_adaptive_cluster(
        redis_server, redis_conn, config):
    from dataclasses import replace
    job_id, _ = placed(redis_conn, config)
    for s in config.slaves:
        execute.execute_units(redis_conn, job_id, on(redis_conn, job_id, s.name), s.name)
    drain(redis_conn, config)
    # deterministic busy seconds: s3 took four times as long per unit as the others
    per_slave = {k.decode(): int(v)
                 for k, v in redis_conn.hgetall(keys.slave_counts(job_id)).items()}
    redis_conn.hset(keys.job(job_id), mapping={f"busy:{s}": n * (4.0 if s == "s3" else 1.0)
                                              for s, n in per_slave.items()})
    observer = adaptive.Observer(redis_conn, config)
    slaves = {s.name: s for s in config.slaves}
    assert observer.step(slaves) == [job_id]
    assert observer.step(slaves) == []  # once
    observed = adaptive.read_observed(redis_conn)
    assert observed == pytest.approx({"s1": 4 / 3, "s2": 4 / 3, "s3": 1 / 3}, rel=1e-3)
    assert json.loads(redis_conn.hget(keys.OBSERVED, "s3"))["jobs"] == 1

    assert set(membership.live_shares(redis_conn, config).values()) == {1.0}  # not adaptive
    adaptive_config = replace(config, options=replace(config.options, adaptive=True))
    shares = membership.live_shares(redis_conn, adaptive_config)
    assert shares == pytest.approx(observed)
    second, _ = placed(redis_conn, adaptive_config)
    counts = [len(on(redis_conn, second, s)) for s in ("s1", "s2", "s3")]
    assert counts[2] == 1 and counts[0] + counts[1] == 11  # 4/3 : 4/3 : 1/3 of 12 units


def test_the_master_loop_steals_on_its_injected_clock_at_most_once_per_period(
        redis_conn, config):
    from rqcluster.assign import STEAL_PERIOD, Balancer
    from rqcluster.reaper import Reaper
    job_id, _ = placed(redis_conn, config)
    for fast in ("s1", "s2"):
        execute.execute_units(redis_conn, job_id, on(redis_conn, job_id, fast), fast)
    balance = Balancer(redis_conn, config, Reaper(redis_conn, config))
    assert balance.steal(100.0) > 0
    execute.execute_units(redis_conn, job_id, on(redis_conn, job_id, "s1"), "s1")
    execute.execute_units(redis_conn, job_id, on(redis_conn, job_id, "s2"), "s2")
    assert balance.steal(100.0 + STEAL_PERIOD / 2) == 0  # not due yet: nothing read
    assert balance.sweep() == 0  # the reaper finds nothing lost: a steal is no loss
    assert get_record(redis_conn, job_id).moved == 0
