"""Graph jobs one step at a time, against a real redis-server: the coordinator starts a
job, places units as their prerequisites complete (rolling), runs scheduler hooks with
exactly-once effect, kills units and finishes jobs; slaves are driven by hand."""

from __future__ import annotations

import pytest
import redis

from rqcluster import codec, enqueue, keys
from rqcluster.assign import Assigner
from rqcluster.config import ClusterConfig
from rqcluster.coordinate import Coordinator, ensure_group
from rqcluster.errors import InputError
from rqcluster.execute import _Batch, execute_unit
from rqcluster.graph import Graph
from rqcluster.jobs import get_record, get_result
from rqcluster.models import JobState, UnitRecord
from rqcluster.scheduler import Scheduler
from rqcluster.scripts import COMPLETE_UNIT
from tests.steps.test_pipeline_steps import live_config


@pytest.fixture
def config(redis_server, redis_conn: redis.Redis) -> ClusterConfig:
    cfg = live_config(redis_server, redis_conn, {"s1": 1, "s2": 1})
    ensure_group(redis_conn)  # the coordinators' group
    return cfg


def square(x):
    return x * x


def add(*values):
    return sum(values)


def constant(value):
    return value


def placed(conn: redis.Redis, job_id: str) -> dict[int, UnitRecord]:
    """Units a slave holds now (placed, not yet done)."""
    out = {}
    for slave in ("s1", "s2"):
        for member in conn.smembers(keys.slave_units(slave)):
            job, index = member.decode().rsplit(":", 1)
            if job == job_id:
                out[int(index)] = UnitRecord.decode(conn.hget(keys.units(job_id), index))
    return out


def run(conn, coordinator: Coordinator, job_id: str, index: int) -> None:
    unit = placed(conn, job_id)[index]
    assert execute_unit(conn, job_id, index, unit.slave).startswith("done")
    while coordinator.step(block_ms=10):
        pass


def start(conn, config, **params) -> tuple[str, Coordinator]:
    job_id = enqueue.write(conn, enqueue.validate("graph", config, **params))
    assert Assigner(conn, config, "master").step(timeout=0.1) == job_id
    return job_id, Coordinator(conn, config, "master")


def test_a_later_stage_rolls_in_as_each_input_is_done(redis_conn, config):
    g = Graph()
    sources = g.stage("source", constant, args=[[1], [2], [3]])
    squares = g.stage("square", square, after=["source[i]"])
    g.stage("total", add, after=[squares])
    job_id, coordinator = start(redis_conn, config, graph=g)
    assert set(placed(redis_conn, job_id)) == set(sources.units)  # nothing else is ready

    run(redis_conn, coordinator, job_id, 0)
    assert set(placed(redis_conn, job_id)) == {1, 2, squares[0]}  # square 0 rolled in
    for index in (1, 2, squares[0], squares[1], squares[2]):
        run(redis_conn, coordinator, job_id, index)
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.RUNNING and list(placed(redis_conn, job_id)) == [6]
    run(redis_conn, coordinator, job_id, 6)
    assert get_record(redis_conn, job_id).state is JobState.DONE
    assert get_result(redis_conn, job_id) == 1 + 4 + 9


def test_a_unit_run_twice_releases_its_dependents_once(redis_conn, config):
    g = Graph()
    first = g.unit(constant, 5)
    g.unit(square, after=[first])
    job_id, coordinator = start(redis_conn, config, graph=g)
    slave = placed(redis_conn, job_id)[0].slave
    assert execute_unit(redis_conn, job_id, 0, slave).startswith("done")
    late = redis_conn.register_script(COMPLETE_UNIT)  # a second run's completion, late
    assert late(**_Batch(redis_conn, job_id, slave)._complete(0, codec.encode(7), 0.1)) == -2
    while coordinator.step(block_ms=10):
        pass
    assert redis_conn.llen(keys.ready(job_id)) == 0 and list(placed(redis_conn, job_id)) == [1]
    run(redis_conn, coordinator, job_id, 1)
    assert get_result(redis_conn, job_id) == 25


class Countdown(Scheduler):
    """Starts one unit at a time until the values reach a total, then finishes."""

    def init(self, seed):
        self.total = 0
        self.calls = 0
        self.start_unit("constant", 10)

    def unit_done(self, unit, value):
        self.calls += 1
        self.total += value
        if self.total >= 30:
            self.finish({"total": self.total, "calls": self.calls})
        else:
            self.start_unit("constant", 10)


def scheduled_graph() -> Graph:
    g = Graph()
    g.task(constant)
    return g


def test_scheduler_hooks_start_units_and_finish_the_job(redis_conn, config):
    g = Graph()
    name = g.task(constant)
    Countdown.task = name  # the hook refers to the task by the name the graph gave it
    job_id, coordinator = start(redis_conn, config, graph=g, scheduler=_named(Countdown, name))
    for index in range(3):
        assert list(placed(redis_conn, job_id)) == [index]
        run(redis_conn, coordinator, job_id, index)
    assert get_result(redis_conn, job_id) == {"total": 30, "calls": 3}


def _named(cls: type[Scheduler], task: str) -> type[Scheduler]:
    class Named(cls):  # type: ignore[valid-type, misc]
        def start_unit(self, _task, *args, **kw):
            return super().start_unit(task, *args, **kw)
    return Named


def test_a_hook_is_applied_once_when_its_event_is_handled_again(redis_conn, config):
    g = Graph()
    name = g.task(constant)
    job_id, coordinator = start(redis_conn, config, graph=g, scheduler=_named(Countdown, name))
    slave = placed(redis_conn, job_id)[0].slave
    execute_unit(redis_conn, job_id, 0, slave)
    entries = coordinator.reader.read(10)
    entry_id, fields = entries[0]
    decoded = {k.decode(): v.decode() for k, v in fields.items()}
    coordinator.handle(entry_id, decoded)
    Coordinator(redis_conn, config, "other").handle(entry_id, decoded)  # a replay
    assert list(placed(redis_conn, job_id)) == [1]  # one unit started, not two
    assert get_record(redis_conn, job_id).total == 2


def test_killed_units_are_done_with_none_and_release_their_dependents(redis_conn, config):
    class Killer(Scheduler):
        def init(self, seed):
            self.a = self.start_unit(name, 1)
            self.b = self.start_unit(name, 2)
            self.c = self.start_unit(add_name, after=[self.a])

        def unit_done(self, unit, value):
            if unit == self.b:
                self.kill(self.a)

    g = Graph()
    name, add_name = g.task(constant), g.task(add)
    job_id, coordinator = start(redis_conn, config, graph=g, scheduler=Killer)
    run(redis_conn, coordinator, job_id, 1)
    assert get_record(redis_conn, job_id).remaining == 1  # a killed, c now ready
    slave = UnitRecord.decode(redis_conn.hget(keys.units(job_id), "0")).slave
    assert execute_unit(redis_conn, job_id, 0, slave).startswith("skipped")  # never runs
    assert list(placed(redis_conn, job_id)) == [2]
    unit = placed(redis_conn, job_id)[2]
    assert execute_unit(redis_conn, job_id, 2, unit.slave).startswith("failed")  # add(None)
    assert get_record(redis_conn, job_id).state is JobState.FAILED


def test_a_failing_hook_fails_the_job_with_its_traceback(redis_conn, config):
    class Broken(Scheduler):
        def init(self, seed):
            raise ValueError("no plan")

    job_id, _ = start(redis_conn, config, graph=Graph(), scheduler=Broken)
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.FAILED
    assert "init failed: ValueError: no plan" in record.error["message"]
    assert "Traceback" in record.error["traceback"]


def test_bad_graphs_are_refused_before_anything_is_written(redis_conn, config):
    before = set(redis_conn.keys())
    g = Graph()
    g.stage("a", square, count=2)
    with pytest.raises(InputError, match="not an earlier stage"):
        g.stage("b", add, after=["nope"])
    with pytest.raises(InputError, match="pairs them"):
        g.stage("c", add, count=3, after=["a[i]"])
    with pytest.raises(InputError, match="no units and no scheduler"):
        enqueue.validate("graph", config, graph=Graph())
    assert set(redis_conn.keys()) == before


class Watcher(Scheduler):
    """Records the slaves it hears about; finishes with them when its unit is done."""

    def init(self, seed):
        self.joined, self.died = [], []
        self.unit = self.start_unit(self.task_name, 1)

    def slave_joined(self, name):
        self.joined.append(name)

    def slave_died(self, name):
        self.died.append(name)

    def unit_done(self, unit, value):
        self.finish({"joined": self.joined, "died": self.died})


def test_slaves_joining_and_dying_reach_the_hooks_once(redis_conn, config):
    g = Graph()
    Watcher.task_name = g.task(constant)
    job_id, coordinator = start(redis_conn, config, graph=g, scheduler=Watcher)
    coordinator.sweep()  # s1 and s2 are live: first seen now
    coordinator.sweep()  # nothing changed: nothing announced again
    while coordinator.step(block_ms=10):
        pass
    slave = placed(redis_conn, job_id)[0].slave
    other = "s2" if slave == "s1" else "s1"
    redis_conn.delete(keys.heartbeat(other))
    Coordinator(redis_conn, config, "restarted").sweep()  # a new coordinator, same memory
    while coordinator.step(block_ms=10):
        pass
    run(redis_conn, coordinator, job_id, 0)
    assert get_result(redis_conn, job_id) == {"joined": ["s1", "s2"], "died": [other]}
