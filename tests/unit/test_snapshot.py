"""The dashboard's snapshot: what it reads from the records nodes publish, and how cheaply.

Records are written the way the nodes write them (liveness's heartbeats, the job record's
own encoding, the hashes the completion script keeps) into the session's real
redis-server; the snapshot must read them back in a fixed number of round trips.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from rqcluster import events, keys, liveness
from rqcluster.config import ClusterConfig, Node, Options, RedisSettings, Slave
from rqcluster.models import JobRecord, JobState
from rqcluster.reduce import ensure_group
from rqcluster.snapshot import (
    RATE_BUCKET,
    SlaveView,
    observe,
    public_url,
    take_snapshot,
)

TTL = 10.0


def config(url: str, slaves: int = 2) -> ClusterConfig:
    return ClusterConfig(
        master_assign=Node("master", "127.0.0.1"), master_combine=Node("master", "127.0.0.1"),
        slaves=tuple(Slave(f"slave{i + 1}", "127.0.0.1", float(i + 1)) for i in range(slaves)),
        redis=RedisSettings(url=url), options=Options(heartbeat_ttl=TTL))


def add_job(conn: redis.Redis, job_id: str, state: JobState, total: int | None = None,
            done: int = 0, started: float | None = None, finished: float | None = None,
            error: dict[str, Any] | None = None) -> None:
    record = JobRecord(id=job_id, kind="montecarlo", state=state, params={},
                       description=f"pi {job_id}", submitted=time.time() - 30,
                       total=total, remaining=None if total is None else total - done,
                       started=started, finished=finished, error=error)
    conn.hset(keys.job(job_id), mapping=record.encode())
    conn.zadd(keys.JOBS_INDEX, {job_id: record.submitted})
    if not state.terminal:
        conn.zadd(keys.UNFINISHED, {job_id: record.submitted})


def busy_slave(conn: redis.Redis, slave: str, member: str, for_seconds: float) -> None:
    """A slave whose worker runs ``member`` since ``for_seconds`` ago."""
    status = liveness.WorkerStatus(slave, f"{slave}.1")
    status.begin(member)
    status.since = time.time() - for_seconds
    liveness.worker_beat(conn, status, TTL)
    conn.hset(keys.RUNNING, member, liveness.running_entry(status.worker, slave))


@pytest.fixture
def url(redis_server: Any) -> str:
    return str(redis_server.url)


def test_an_empty_cluster_is_all_slaves_dead_and_nothing_else(redis_conn: redis.Redis,
                                                                 url: str) -> None:
    snap = take_snapshot(redis_conn, config(url))
    assert [s.state for s in snap.slaves] == ["dead", "dead"]
    assert snap.jobs == () and snap.events == () and snap.submitted == 0
    assert [r.alive for r in snap.roles] == [False, False]
    assert snap.broker.version and snap.broker.memory and snap.broker.clients
    assert snap.round_trips == 1
    json.dumps(snap.to_dict())  # --json prints it


def test_a_busy_slave_shows_its_unit_and_for_how_long(redis_conn: redis.Redis,
                                                     url: str) -> None:
    busy_slave(redis_conn, "slave1", "j1:3", for_seconds=4.0)
    liveness.worker_beat(redis_conn, liveness.WorkerStatus("slave2", "slave2.1"), TTL)
    snap = take_snapshot(redis_conn, config(url))
    s1, s2 = snap.slaves
    assert (s1.state, s2.state) == ("busy", "idle")
    assert [r.unit for r in s1.running] == ["j1:3"]
    assert s1.running[0].seconds == pytest.approx(4.0, abs=1.0)
    assert s1.beat_age is not None and s1.beat_age < 2
    assert snap.round_trips == 2


def test_a_unit_whose_worker_is_gone_is_shown_lost_and_the_silent_slave_dead(
        redis_conn: redis.Redis, url: str) -> None:
    redis_conn.hset(keys.RUNNING, "j1:0", liveness.running_entry("slave1.9", "slave1"))
    snap = take_snapshot(redis_conn, config(url))
    s1 = snap.slaves[0]
    assert s1.state == "dead"
    assert s1.running[0].worker_alive is False and s1.running[0].seconds is None


def test_a_slave_not_in_the_config_is_unknown_while_it_holds_work(redis_conn: redis.Redis,
                                                                  url: str) -> None:
    redis_conn.hset(keys.SLAVE_STATS, mapping={"old": 5, "gone": 7, "slave1": 3,
                                               "slave1:busy": 1.5, "slave1:lost": 1})
    redis_conn.rpush(keys.rq_queue_key("old"), "rqc-j-1", "rqc-j-2")
    snap = take_snapshot(redis_conn, config(url))
    unknown = [s for s in snap.slaves if not s.configured]
    assert [(s.name, s.state, s.queued, s.units_done) for s in unknown] == \
        [("old", "unknown", 2, 5)]  # "gone" holds nothing: not shown
    s1 = snap.slaves[0]
    assert (s1.name, s1.units_done, s1.busy_seconds, s1.lost) == ("slave1", 3, 1.5, 1)


def test_throughput_is_the_last_minute_of_rate_buckets(redis_conn: redis.Redis,
                                                        url: str) -> None:
    now = 1_000_000.0  # on a bucket boundary
    bucket = int(now) // RATE_BUCKET
    redis_conn.hset(keys.slave_rate("slave1"),
                    mapping={bucket: 6, bucket - 11: 4, bucket - 12: 100})
    snap = take_snapshot(redis_conn, config(url), now=now)
    s1 = snap.slaves[0]
    assert s1.rate[0] == 4 and s1.rate[-1] == 6 and sum(s1.rate) == 10
    assert s1.throughput == pytest.approx(10 / 55)


def test_jobs_show_progress_eta_split_retries_and_lost_runs(redis_conn: redis.Redis,
                                                             url: str) -> None:
    now = time.time()
    add_job(redis_conn, "run", JobState.RUNNING, total=10, done=4, started=now - 8)
    redis_conn.hset(keys.slave_counts("run"), mapping={"slave1": 1, "slave2": 3})
    redis_conn.hset(keys.job("run"), mapping={"retries": 2, "lost": 1, "moved": 3})
    add_job(redis_conn, "bad", JobState.FAILED, total=4, done=1, started=now - 20,
            finished=now - 10, error={"unit": 2, "slave": "slave1",
                                      "message": "ValueError: bad item 7"})
    snap = take_snapshot(redis_conn, config(url), now=now)
    by_id = {j.id: j for j in snap.jobs}
    run = by_id["run"]
    assert (run.done, run.total, run.per_slave) == (4, 10, {"slave1": 1, "slave2": 3})
    assert run.rate == pytest.approx(0.5) and run.eta == pytest.approx(12.0)
    assert (run.retries, run.lost, run.moved) == (2, 1, 3)
    bad = by_id["bad"]
    assert bad.error == "unit 2: ValueError: bad item 7" and bad.eta is None


def test_results_stream_pending_lag_and_reducers(redis_conn: redis.Redis, url: str) -> None:
    ensure_group(redis_conn)
    for i in range(3):
        redis_conn.xadd(keys.RESULTS_STREAM, {"job": "j", "unit": i})
    redis_conn.xreadgroup(keys.COMBINERS_GROUP, "master@h:1", {keys.RESULTS_STREAM: ">"},
                          count=1)
    redis_conn.hset(keys.COMBINER_STATS, "master@h:1", 41)
    stream = take_snapshot(redis_conn, config(url)).stream
    assert (stream.length, stream.pending, stream.lag) == (3, 1, 2)
    assert [(c.name, c.folded) for c in stream.consumers] == [("master@h:1", 41)]
    assert stream.reducers_alive == 1


def test_events_and_role_heartbeats_are_read(redis_conn: redis.Redis, url: str) -> None:
    events.emit(redis_conn, events.SLAVE_JOINED, slave="slave1", worker="slave1.1")
    events.emit(redis_conn, events.JOB_DONE, job="j1")
    liveness.RoleBeat(redis_conn, "master-combine", "master", TTL)()
    snap = take_snapshot(redis_conn, config(url))
    assert [e.event for e in snap.events] == ["slave-joined", "job-done"]
    assign, combine = snap.roles
    assert not assign.alive and combine.alive and combine.node == "master"


def test_the_snapshot_costs_two_round_trips_whatever_is_queued(redis_conn: redis.Redis,
                                                                url: str) -> None:
    cfg = config(url, slaves=4)
    trips = []
    real_pipeline = redis_conn.pipeline
    commands: list[str] = []

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a: Any, **k: Any) -> Any:
            trips.append(len(pipe.command_stack))
            commands.extend(str(c[0][0]) for c in pipe.command_stack
                            if c[0][:2] not in (("SMEMBERS", keys.SLAVES),
                                                ("SMEMBERS", keys.DRAINING)))  # (per slave)
            return real_execute(*a, **k)
        pipe.execute = execute  # type: ignore[method-assign]
        return pipe

    redis_conn.pipeline = counting_pipeline  # type: ignore[method-assign]
    add_job(redis_conn, "big", JobState.RUNNING, total=50_000, done=0, started=time.time())
    busy_slave(redis_conn, "slave1", "big:0", 1.0)
    for n in (10, 50_000):
        for s in cfg.slaves:
            redis_conn.delete(keys.rq_queue_key(s.name), keys.slave_units(s.name))
            redis_conn.rpush(keys.rq_queue_key(s.name), *(f"rqc-big-{i}" for i in range(n)))
            redis_conn.sadd(keys.slave_units(s.name), *(f"big:{i}" for i in range(n)))
        trips.clear()
        snap = take_snapshot(redis_conn, cfg)
        assert len(trips) == snap.round_trips == 2
        assert sum(s.queued for s in snap.slaves) == 4 * n
    assert not {"KEYS", "SCAN", "LRANGE", "SMEMBERS"} & set(commands)


def test_an_old_unfinished_job_is_listed_beyond_the_newest_ones(
        redis_conn: redis.Redis, url: str) -> None:
    add_job(redis_conn, "old-running", JobState.RUNNING, total=10, started=time.time())
    redis_conn.zadd(keys.JOBS_INDEX, {"old-running": 1.0})
    redis_conn.zadd(keys.UNFINISHED, {"old-running": 1.0})
    for i in range(5):
        add_job(redis_conn, f"new-{i}", JobState.DONE, total=1, done=1,
                started=time.time(), finished=time.time())
    listed = [j.id for j in take_snapshot(redis_conn, config(url), max_jobs=3).jobs]
    assert "old-running" in listed and len(listed) == 3
    assert listed[-1] == "old-running"  # newest first


def test_a_slave_missing_from_the_config_is_shown_once_it_has_beaten(
        redis_conn: redis.Redis, url: str) -> None:
    liveness.worker_beat(redis_conn, liveness.WorkerStatus("stranger", "stranger.9"), TTL)
    names = [s.name for s in take_snapshot(redis_conn, config(url)).slaves]
    assert "stranger" in names


def test_observed_performance_is_on_the_configured_scale() -> None:
    fast = SlaveView("a", "idle", performance=2.0, units_done=40, busy_seconds=10.0)
    slow = SlaveView("b", "idle", performance=2.0, units_done=10, busy_seconds=10.0)
    new = SlaveView("c", "idle", performance=1.0, units_done=1, busy_seconds=1.0)
    a, b, c = observe([fast, slow, new])
    assert (a.observed, b.observed, c.observed) == (3.2, 0.8, None)
    assert observe([fast]) == [fast]  # one slave alone has nothing to compare with


def test_the_password_never_reaches_the_screen() -> None:
    assert public_url("redis://:s3cret@10.0.0.1:6379/0") == "redis://10.0.0.1:6379/0"
    assert public_url("rediss://bob:s3cret@h/1") == "rediss://bob@h/1"
    assert public_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"


def test_joined_draining_and_drained_slaves_and_measured_performance_are_shown(
        redis_conn: redis.Redis) -> None:
    import io
    import json as _json

    from rich.console import Console

    from rqcluster import membership
    from rqcluster.dashboard import render
    cfg = config("redis://127.0.0.1:1/0")
    liveness.beat(redis_conn, "slave1", 10)
    liveness.beat(redis_conn, "newbie", 10)
    membership.announce(redis_conn, "newbie", 2.0, joining=True)
    membership.drain(redis_conn, cfg, "slave1")
    membership.drain(redis_conn, cfg, "slave2")  # not running: drained
    redis_conn.hset(keys.OBSERVED, "slave1", _json.dumps({"performance": 0.25}))
    snap = take_snapshot(redis_conn, cfg)
    by = {s.name: s for s in snap.slaves}
    assert (by["slave1"].state, by["slave1"].observed) == ("draining", 0.25)
    assert by["slave2"].state == "drained"
    assert (by["newbie"].state, by["newbie"].joined, by["newbie"].performance) == \
        ("idle", True, 2.0)
    console = Console(width=140, color_system=None, force_terminal=False, record=True,
                      file=io.StringIO())
    console.print(render(snap, width=140))
    frame = console.export_text()
    assert "idle joined" in frame and "draining" in frame and "drained" in frame
