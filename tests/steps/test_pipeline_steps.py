"""The pipeline one step at a time, in this process, against a real redis-server.

Assigner.step, execute_unit and Reducer.step are driven by hand, so each invariant of the
data flow is pinned down without waiting on other processes: placement is proportional
and atomic, a unit run twice is counted once, a replayed stream entry is stored once,
failures carry the remote traceback, ended jobs are skipped.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import redis
from rq import Queue

from rqcluster import enqueue, execute, jobs, keys, liveness
from rqcluster.assign import NO_LIVE_SLAVE, Assigner
from rqcluster.config import ClusterConfig, parse_config
from rqcluster.errors import InputError, JobFailed, JobTimeout
from rqcluster.execute import execute_unit
from rqcluster.jobs import cancel, get_record, get_result, get_status, raise_for_state
from rqcluster.kinds.montecarlo import estimate_locally
from rqcluster.models import JobState, UnitRecord
from rqcluster.placement import batches
from rqcluster.reduce import Reducer, ensure_group


def make_config(url: str, performances: dict[str, float]) -> ClusterConfig:
    return parse_config({
        "master-assign": {"name": "master", "ip": "127.0.0.1"},
        "master-combine": {"name": "master", "ip": "127.0.0.1"},
        "slaves": [{"name": n, "ip": "127.0.0.1", "performance": p}
                   for n, p in performances.items()],
        "redis": {"url": url},
    })


def live_config(redis_server, conn: redis.Redis,
                performances: dict[str, float]) -> ClusterConfig:
    """A config of these slaves, every one with a heartbeat, and the combiners' group."""
    cfg = make_config(redis_server.url, performances)
    for s in cfg.slaves:
        liveness.beat(conn, s.name, 60)
    ensure_group(conn)
    return cfg


@pytest.fixture
def config(redis_server, redis_conn: redis.Redis) -> ClusterConfig:
    return live_config(redis_server, redis_conn, {"s1": 1, "s2": 3})


def units_of(conn: redis.Redis, job_id: str) -> list[UnitRecord]:
    raw = conn.hgetall(keys.units(job_id))
    return sorted((UnitRecord.decode(v) for v in raw.values()), key=lambda u: u.index)


def run_all(conn: redis.Redis, job_id: str) -> None:
    for u in units_of(conn, job_id):
        execute_unit(conn, job_id, u.index, u.slave)


def drain(conn: redis.Redis, config: ClusterConfig, reducer: Reducer | None = None) -> None:
    reducer = reducer or Reducer(conn, config, "master")
    while reducer.step(block_ms=10):
        pass


def test_matmul_runs_through_every_step_and_matches_numpy(redis_conn, config):
    a = np.arange(60 * 7).reshape(60, 7) - 100
    b = np.arange(7 * 5).reshape(7, 5) * 3
    job_id = enqueue.submit(redis_conn, "matmul", a=a, b=b)
    assert get_record(redis_conn, job_id).state is JobState.SUBMITTED

    assert Assigner(redis_conn, config, "master").step(timeout=0.1) == job_id
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.RUNNING and record.remaining == record.total

    run_all(redis_conn, job_id)
    drain(redis_conn, config)
    np.testing.assert_array_equal(get_result(redis_conn, job_id), a @ b)
    assert get_record(redis_conn, job_id).state is JobState.DONE


def test_units_are_placed_in_proportion_to_performance_on_each_slaves_rq_queue(
        redis_conn, config):
    job_id = enqueue.submit(redis_conn, "matmul", a=np.ones((800, 4)), b=np.ones((4, 4)))
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    units = units_of(redis_conn, job_id)
    rows = {"s1": 0, "s2": 0}
    for u in units:
        rows[u.slave] += u.spec["rows"][1] - u.spec["rows"][0]
    block = max(u.spec["rows"][1] - u.spec["rows"][0] for u in units)
    assert abs(rows["s2"] - 3 * rows["s1"]) <= block
    for slave in ("s1", "s2"):
        mine = sorted(u.index for u in units if u.slave == slave)
        held = {m.decode() for m in redis_conn.smembers(keys.slave_units(slave))}
        assert held == {keys.unit_member(job_id, i) for i in mine}
        queue = Queue(keys.slave_queue(slave), connection=redis_conn)
        assert sorted(queue.job_ids) == sorted(  # the RQ jobs carrying them, in batches
            keys.rq_job_id(job_id, b[0]) + ("b" if len(b) > 1 else "") for b in batches(mine))


def test_a_unit_run_twice_is_counted_once(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=5000, seed=9, unit_samples=1000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    first = units_of(redis_conn, job_id)[0]
    assert execute_unit(redis_conn, job_id, first.index, first.slave).startswith("done")
    again = execute_unit(redis_conn, job_id, first.index, first.slave)
    assert again == f"skipped: unit {first.index} of job {job_id} is done"
    record = get_record(redis_conn, job_id)
    assert record.done_units == 1
    assert redis_conn.xlen(keys.RESULTS_STREAM) == 1


def test_two_completions_racing_count_once(redis_conn, config):
    """Two workers that both started a unit (a moved unit whose first slave was only
    frozen) both reach the completion step: the second changes nothing."""
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=5000, seed=9, unit_samples=1000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    first = units_of(redis_conn, job_id)[0]
    complete = execute._unit_scripts(redis_conn).complete
    args = dict(keys=[keys.job(job_id), keys.partials(job_id), keys.slave_counts(job_id),
                      keys.RESULTS_STREAM, keys.units(job_id), keys.RUNNING,
                      keys.SLAVE_STATS, keys.slave_rate(first.slave)])
    member = keys.unit_member(job_id, first.index)
    outcomes = [complete(**args, args=[job_id, first.index, slave, b"x", "0.1", member,
                                       keys.SLAVE_PREFIX]) for slave in ("s1", "s2")]
    assert outcomes == [4, -2]
    assert get_record(redis_conn, job_id).done_units == 1
    assert redis_conn.hgetall(keys.slave_counts(job_id)) == {b"s1": b"1"}
    assert redis_conn.xlen(keys.RESULTS_STREAM) == 1
    assert not redis_conn.sismember(keys.slave_units(first.slave), member)


def test_a_replayed_stream_entry_is_stored_once(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=3000, seed=4, unit_samples=1000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    entries = redis_conn.xrange(keys.RESULTS_STREAM)
    _, fields = entries[0]
    redis_conn.xadd(keys.RESULTS_STREAM, fields)  # the same partial, delivered again
    drain(redis_conn, config)
    assert get_result(redis_conn, job_id) == estimate_locally(3000, 4, 1000)
    assert int(redis_conn.hget(keys.COMBINER_STATS, Reducer(redis_conn, config,
                                                            "master").consumer)) == 3


def test_a_forged_stream_entry_for_a_unit_not_done_is_ignored(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=3000, seed=4, unit_samples=1000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    for unit in ("0", "1", "2"):  # announced, but no slave stored these partials
        redis_conn.xadd(keys.RESULTS_STREAM, {"job": job_id, "unit": unit, "slave": "evil"})
    redis_conn.xadd(keys.RESULTS_STREAM, {"garbage": "1"})
    drain(redis_conn, config)
    assert get_record(redis_conn, job_id).state is JobState.RUNNING
    assert redis_conn.xlen(keys.RESULTS_STREAM) == 0
    run_all(redis_conn, job_id)
    drain(redis_conn, config)
    assert get_result(redis_conn, job_id) == estimate_locally(3000, 4, 1000)


def test_two_combiners_share_the_stream_without_double_counting(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=40_000, seed=1, unit_samples=1000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    one, two = Reducer(redis_conn, config, "r1"), Reducer(redis_conn, config, "r2")
    one.consumer, two.consumer = "r1", "r2"
    one.reader.count = two.reader.count = 3
    while one.step(block_ms=10) + two.step(block_ms=10):
        pass
    stats = {k.decode(): int(v) for k, v in redis_conn.hgetall(keys.COMBINER_STATS).items()}
    assert set(stats) == {"r1", "r2"} and sum(stats.values()) == 40
    assert get_result(redis_conn, job_id) == estimate_locally(40_000, 1, 1000)


def test_a_job_left_ready_by_a_dead_combiner_is_finished_by_the_next(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=2000, seed=2, unit_samples=1000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    dying = Reducer(redis_conn, config, "dying")
    dying.combine = lambda job_id: False  # type: ignore[method-assign]  # dies before combining
    while dying.step(block_ms=10):
        pass
    assert redis_conn.sismember(keys.COMBINE_READY, job_id)
    drain(redis_conn, config)
    assert get_record(redis_conn, job_id).state is JobState.DONE
    assert not redis_conn.sismember(keys.COMBINE_READY, job_id)


def test_an_exception_in_user_code_fails_the_job_with_the_remote_traceback(redis_conn, config):
    def explode(x):
        if x == 7:
            raise ValueError("bad item 7")
        return x

    job_id = enqueue.submit(redis_conn, "map", function=explode, items=list(range(20)),
                            reduce="sum")
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.FAILED
    assert record.error["message"] == "ValueError: bad item 7"
    assert "Traceback" in record.error["traceback"] and "explode" in record.error["traceback"]
    assert "to item 7 of the input" in record.error["traceback"]
    with pytest.raises(JobFailed, match="bad item 7"):
        raise_for_state(record)
    assert get_status(redis_conn, job_id).record.state is JobState.FAILED


def test_units_of_a_cancelled_job_are_skipped_and_its_inputs_freed(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "matmul", a=np.ones((40, 3)), b=np.ones((3, 3)))
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    units = units_of(redis_conn, job_id)
    assert cancel(redis_conn, job_id)
    outcomes = [execute_unit(redis_conn, job_id, u.index, u.slave) for u in units]
    assert all(o.startswith("skipped") for o in outcomes)
    assert redis_conn.xlen(keys.RESULTS_STREAM) == 0
    assert not redis_conn.exists(keys.job_input(job_id, "a"), keys.job_input(job_id, "b"))
    assert not cancel(redis_conn, job_id)  # already ended


def test_a_job_waits_on_the_submitted_list_while_no_slave_is_live(redis_conn, config):
    for s in config.slaves:
        redis_conn.delete(keys.heartbeat(s.name))
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=10, seed=1)
    assigner = Assigner(redis_conn, config, "master")
    assigner.step(timeout=0.1)
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.SUBMITTED and record.waiting == NO_LIVE_SLAVE
    assert redis_conn.lrange(keys.SUBMITTED, 0, -1) == [job_id.encode()]
    liveness.beat(redis_conn, "s2", 60)
    assigner.step(timeout=0.1)
    units = units_of(redis_conn, job_id)
    assert get_record(redis_conn, job_id).waiting is None
    assert {u.slave for u in units} == {"s2"}


def test_a_job_taken_by_an_assigner_that_died_is_placed_once_on_restart(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=4000, seed=1, unit_samples=1000)
    # The assigner took the job (BLMOVE) and died before placing it.
    redis_conn.lmove(keys.SUBMITTED, keys.assigning("master"), "LEFT", "RIGHT")
    restarted = Assigner(redis_conn, config, "master")
    assert restarted.recover() == 1
    assert restarted.recover() == 0
    held = sum(redis_conn.scard(keys.slave_units(s)) for s in ("s1", "s2"))
    assert held == get_record(redis_conn, job_id).total == 4
    carried = sum(len(batches(sorted(u.index for u in units_of(redis_conn, job_id)
                                     if u.slave == s))) for s in ("s1", "s2"))
    queued = sum(Queue(keys.slave_queue(s), connection=redis_conn).count for s in ("s1", "s2"))
    assert queued == carried  # each unit on one RQ job, once


def test_refused_input_writes_nothing(redis_conn, config):
    before = redis_conn.dbsize()
    with pytest.raises(InputError, match=r"\(3, 4\).*\(5, 2\)"):
        enqueue.submit(redis_conn, "matmul", a=np.ones((3, 4)), b=np.ones((5, 2)))
    with pytest.raises(InputError):
        enqueue.submit(redis_conn, "map", function=len, items=[object()])
    with pytest.raises(InputError):
        enqueue.submit(redis_conn, "montecarlo", samples=0)
    assert redis_conn.dbsize() == before


def test_the_job_record_keeps_params_and_description(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=10, seed=5)
    record = get_record(redis_conn, job_id)
    assert record.params["seed"] == 5 and record.params["samples"] == 10
    assert "10 samples" in record.description
    assert json.loads(redis_conn.hget(keys.job(job_id), "inputs")) == []


def test_a_stacked_result_streams_block_by_block_into_the_output_file(redis_conn, config,
                                                                       tmp_path):
    a = np.arange(90 * 6, dtype=np.int32).reshape(90, 6)
    b = np.arange(6 * 4, dtype=np.int64).reshape(6, 4)
    job_id = enqueue.submit(redis_conn, "matmul", a=a, b=b)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    drain(redis_conn, config)
    saved = get_result(redis_conn, job_id, out=tmp_path / "c.npy")
    assert saved.path == tmp_path / "c.npy" and saved.shape == (90, 4)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), a @ b)
    assert list(tmp_path.iterdir()) == [tmp_path / "c.npy"]  # no temp file left behind
    # The blocks are the result: kept (with the result's expiry), inputs freed.
    assert redis_conn.hlen(keys.partials(job_id)) == get_record(redis_conn, job_id).total
    assert 0 < redis_conn.ttl(keys.partials(job_id)) <= config.options.result_ttl
    assert not redis_conn.exists(keys.job_input(job_id, "a"), keys.units(job_id))


def test_a_result_the_kind_combines_is_stored_once_and_the_partials_freed(redis_conn, config):
    job_id = enqueue.submit(redis_conn, "map", function=abs, items=[-3, 4, -5], reduce="sum")
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    drain(redis_conn, config)
    assert get_result(redis_conn, job_id) == 12
    assert not redis_conn.exists(keys.partials(job_id), keys.folded(job_id))
    assert 0 < redis_conn.ttl(keys.job(job_id)) <= config.options.result_ttl


def test_map_items_may_be_numpy_arrays_and_scalars_from_the_python_api(redis_conn, config):
    items = [np.arange(3) * i for i in range(5)] + [np.int64(7) * np.ones(3, dtype=np.int64)]
    job_id = enqueue.submit(redis_conn, "map", function=np.square, items=items, reduce="sum")
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    drain(redis_conn, config)
    np.testing.assert_array_equal(get_result(redis_conn, job_id),
                                  sum(np.square(x) for x in items))


def test_a_unit_that_calls_sys_exit_fails_the_job_instead_of_killing_the_slave(
        redis_conn, config):
    import sys

    def leave(x):
        sys.exit(3)

    job_id = enqueue.submit(redis_conn, "map", function=leave, items=[1, 2])
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)  # returns: the exit did not escape execute_unit
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.FAILED and record.error["message"] == "SystemExit: 3"


def test_a_waiting_client_is_told_when_no_master_assign_runs(redis_conn, config, monkeypatch):
    monkeypatch.setattr(jobs, "STALL_SECONDS", 0.1)
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=10, seed=1)
    seen = []
    with pytest.raises(JobTimeout, match="no master-assign is running"):
        jobs.wait(redis_conn, job_id, timeout=0.5, on_progress=seen.append)
    assert seen[0].waiting is None and seen[-1].waiting == jobs.NO_ASSIGNER

    liveness.RoleBeat(redis_conn, "master-assign", "master", 10)()
    with pytest.raises(JobTimeout) as err:
        jobs.wait(redis_conn, job_id, timeout=0.5)
    assert "no master-assign" not in str(err.value)


def test_a_waiting_client_is_told_when_units_are_done_but_no_combiner_runs(
        redis_conn, config, monkeypatch):
    monkeypatch.setattr(jobs, "STALL_SECONDS", 0.1)
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=10, seed=1)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    with pytest.raises(JobTimeout, match="no master-combine is running"):
        jobs.wait(redis_conn, job_id, timeout=0.5)


def test_many_units_are_placed_in_batches_and_run_by_real_rq_workers(redis_conn, config):
    from rq.worker import SimpleWorker

    from rqcluster.rqjobs import slave_queue
    from rqcluster.signedrq import SignedSerializer, UnitJob

    params = {"samples": 400 * 50, "seed": 11, "unit_samples": 50}
    job_id = enqueue.submit(redis_conn, "montecarlo", **params)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    for slave in ("s1", "s2"):
        queue = slave_queue(redis_conn, slave)  # signed unit jobs, as a slave reads them
        held = redis_conn.scard(keys.slave_units(slave))
        assert len(queue.job_ids) == len(batches(list(range(held)))) < held
        SimpleWorker([queue], connection=redis_conn, serializer=SignedSerializer,
                     job_class=UnitJob).work(burst=True)
    drain(redis_conn, config)
    assert get_result(redis_conn, job_id) == estimate_locally(**params)
    assert sum(int(v) for v in redis_conn.hvals(keys.slave_counts(job_id))) == 400


def test_forgetting_ended_jobs_returns_redis_to_its_baseline(redis_conn, config):
    a = np.arange(40 * 6).reshape(40, 6)
    baseline = set(redis_conn.keys("rqc:job:*"))
    done = enqueue.submit(redis_conn, "matmul", a=a, b=a.T)  # a stacked result
    summed = enqueue.submit(redis_conn, "montecarlo", samples=4000, seed=1, unit_samples=1000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    running = enqueue.submit(redis_conn, "montecarlo", samples=10, seed=1)
    for job_id in (done, summed):
        run_all(redis_conn, job_id)
    drain(redis_conn, config)
    with pytest.raises(InputError, match="cancel it first"):
        jobs.forget(redis_conn, running)
    cancel(redis_conn, running)
    for job_id in (done, summed, running):
        jobs.forget(redis_conn, job_id)
    assert set(redis_conn.keys("rqc:job:*")) == baseline
    assert redis_conn.zcard(keys.JOBS_INDEX) == 0


def test_the_job_index_drops_jobs_whose_records_expired(redis_conn, config):
    old = enqueue.submit(redis_conn, "montecarlo", samples=10, seed=1)
    new = enqueue.submit(redis_conn, "montecarlo", samples=10, seed=1)
    redis_conn.delete(keys.job(old), keys.job(new))  # as expiry would
    redis_conn.zadd(keys.JOBS_INDEX, {old: 1.0})
    assert jobs.prune_index(redis_conn, older_than=1000.0) == 1
    assert redis_conn.zrange(keys.JOBS_INDEX, 0, -1) == [new.encode()]


def test_a_big_array_from_a_file_is_staged_and_the_job_still_matches_numpy(
        redis_conn, config, tmp_path, monkeypatch):
    from rqcluster import store
    monkeypatch.setattr(store, "STAGE_ABOVE_BYTES", 1000)  # stage everything over 1 kB
    a = np.arange(300 * 40, dtype=np.int64).reshape(300, 40) - 77
    b = np.arange(40 * 9, dtype=np.int64).reshape(40, 9) * 5
    np.save(tmp_path / "A.npy", a)
    np.save(tmp_path / "B.npy", b)
    job_id = enqueue.submit(redis_conn, "matmul", a=str(tmp_path / "A.npy"),
                            b=str(tmp_path / "B.npy"))
    assert all(redis_conn.ttl(k) == -1 for k in redis_conn.keys(f"rqc:job:{{{job_id}}}:input:*"))
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    run_all(redis_conn, job_id)
    drain(redis_conn, config)
    np.testing.assert_array_equal(get_result(redis_conn, job_id), a @ b)
