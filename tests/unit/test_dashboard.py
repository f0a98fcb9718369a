"""Drawing the dashboard: plain snapshots in, text out (no Redis, no clock)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.console import Console

from rqcluster.dashboard import fit, render, seconds, sparkline, visible_jobs
from rqcluster.events import Event
from rqcluster.snapshot import (
    BrokerView,
    ConsumerView,
    JobView,
    RoleView,
    SlaveView,
    Snapshot,
    StreamView,
    UnitRun,
)

NOW = 1_800_000_000.0


def job(job_id: str, state: str = "running", total: int | None = 90, done: int = 45,
        **kw: object) -> JobView:
    fields: dict[str, object] = dict(
        id=job_id, kind="matmul", state=state, description="matmul 2048x2048 @ 2048x2048",
        total=total, done=done, submitted=NOW - 40, started=NOW - 39, finished=None,
        elapsed=40.0, rate=1.1, eta=41.0, per_slave={"slave1": 15, "slave2": 30},
        retries=1, lost=0, moved=2)
    fields.update(kw)
    return JobView(**fields)  # type: ignore[arg-type]


def snapshot(**changes: object) -> Snapshot:
    snap = Snapshot(
        now=NOW, broker=BrokerView("redis://10.0.0.1:6379/0", "7.2.4", 3_500_000, True, 9),
        roles=(RoleView("master-assign", "head", True, "head", "h", 1, 1.0),
               RoleView("master-combine", "head", True, "head", "h", 1, 2.0)),
        slaves=(
            SlaveView("slave1", "busy", ip="10.0.0.11", performance=1.0, observed=0.93,
                      alive=True, beat_age=1.2,
                      running=(UnitRun("691f2a3bc0ffee:12", "slave1.42", 3.4),),
                      units_done=120, busy_seconds=300.0,
                      rate=(0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1), throughput=0.6, queued=42,
                      held=44),
            SlaveView("slave2", "idle", ip="10.0.0.12", performance=2.0, alive=True,
                      beat_age=0.3, units_done=260, throughput=1.2)),
        jobs=(job("691f2a3bc0ffee"),),
        stream=StreamView(3, 1, 2, (ConsumerView("head@h:1", 1, 0.4, 300),), 1),
        events=(Event(NOW - 30, "slave-joined", {"slave": "slave1", "worker": "slave1.42"}),),
        submitted=0, round_trips=2)
    return replace(snap, **changes)  # type: ignore[arg-type]


def text(snap: Snapshot, width: int = 80, height: int | None = None) -> str:
    """The frame as a monochrome terminal of ``width`` columns shows it."""
    console = Console(width=width, color_system=None, force_terminal=False, record=True,
                      file=open("/dev/null", "w"))  # noqa: SIM115 - closed with the console
    console.print(render(snap, width, height))
    out = console.export_text()
    console.file.close()
    return out


def line_with(frame: str, needle: str) -> str:
    return next(line for line in frame.splitlines() if needle in line)


@pytest.mark.parametrize("width", [80, 100, 160])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    frame = text(snapshot(slaves=snapshot().slaves + (SlaveView("dead1", "dead", ip="x",
                                                                performance=1.0),)),
                 width)
    assert max(len(line) for line in frame.splitlines()) <= width


@pytest.mark.parametrize("width", range(70, 200, 3))
def test_a_shortened_cell_ends_in_an_ellipsis_at_any_width(width: int) -> None:
    failed = job("bad0000000000a", state="failed", error="unit 2: ValueError: bad item 7")
    frame = text(snapshot(jobs=(job("691f2a3bc0ffee"), failed)), width)
    for line in frame.splitlines():
        assert len(line) <= width
        for whole in ("slave1 15 slave2 30", "unit 2: ValueError: bad item 7"):
            assert whole[:10] not in line or whole in line or "…" in line, line


def test_at_80_columns_every_column_the_operator_needs_is_there() -> None:
    frame = text(snapshot(), 80)
    for heading in ("slave", "perf", "state", "beat", "unit", "for", "done", "u/s",
                    "last min", "queue"):
        assert heading in line_with(frame, "beat")
    row = line_with(frame, "slave1 ")
    assert "1/0.93" in row and "busy" in row and "1.2s" in row and "3.4s" in row
    assert "c0ffee:12" in row and "120" in row and "0.60" in row and "42" in row
    jobs = line_with(frame, "691f2a3bc0ffee")  # the full id, to paste into `status`
    assert "running" in jobs and "45/90" in jobs and "█████░░░░░" in jobs and "41s" in jobs
    assert "1/0/2" in jobs  # retries / runs lost / units moved


def test_wider_terminals_get_more_columns() -> None:
    frame = text(snapshot(), 160)
    assert "10.0.0.11" in line_with(frame, "slave1 ")
    assert "held" in frame and "description" in frame
    assert "691f2a3bc0ffee:12" in frame  # the unit's whole id
    assert "slave1 15 slave2 30" in line_with(frame, "691f2a3bc0ffee ")


def test_the_header_names_the_broker_and_the_roles() -> None:
    frame = text(snapshot(broker=BrokerView("redis://h:1/0", "7.2.4", 3 * 2**20, False, 9)))
    assert "redis://h:1/0" in frame and "Redis 7.2.4" in frame and "3.0 MiB" in frame
    assert "AOF OFF" in frame and "9 clients" in frame
    assert "master-assign head alive" in frame and "master-combine head alive" in frame


def test_a_dead_slave_and_a_dead_master_are_spelled_out() -> None:
    dead = SlaveView("gpu-box", "dead", ip="10.0.0.13", performance=2.5, queued=17, lost=2,
                     running=(UnitRun("691f2a3bc0ffee:7", "gpu-box.9", None, False),))
    snap = snapshot(slaves=snapshot().slaves + (dead,),
                    roles=(RoleView("master-assign", "head", False),
                           RoleView("master-combine", "head", True)))
    frame = text(snap)
    row = line_with(frame, "gpu-box")
    assert "dead" in row and "lost" in row and "17" in row
    assert "master-assign head DOWN" in frame
    assert "2/3 alive" in frame


def test_a_dead_slave_is_red_and_a_busy_one_green_on_a_colour_terminal() -> None:
    dead = SlaveView("gpu-box", "dead", performance=2.5)
    console = Console(width=100, color_system="standard", force_terminal=True, record=True,
                      file=open("/dev/null", "w"))  # noqa: SIM115 - closed below
    console.print(render(snapshot(slaves=(dead, *snapshot().slaves)), 100))
    ansi = console.export_text(styles=True)
    console.file.close()
    assert "\x1b[1;31mdead" in ansi and "\x1b[1;32mbusy" in ansi


def test_a_failed_job_shows_its_error_and_stays_a_while() -> None:
    failed = job("bad0000000000a", state="failed", total=8, done=3, finished=NOW - 60,
                 eta=None, error="unit 2: ValueError: bad item 7")
    frame = text(snapshot(jobs=(failed,)), 120)
    row = line_with(frame, "bad0000000000a")
    assert "failed" in row and "3/8" in row and "unit 2: ValueError: bad item 7" in row
    old = replace(failed, finished=NOW - 3600)
    assert "bad0000000000a" not in text(snapshot(jobs=(old,)), 120)  # scrolled off


def test_unfinished_jobs_come_before_finished_ones() -> None:
    done = job("done0000000000", state="done", done=90, finished=NOW - 5)
    running = job("runs0000000000")
    assert [j.id for j in visible_jobs(snapshot(jobs=(done, running)))] == \
        ["runs0000000000", "done0000000000"]


def test_a_job_not_placed_yet_says_why_it_waits() -> None:
    waiting = job("wait0000000000", state="submitted", total=None, done=0, eta=None,
                  waiting="no live slave: waiting for a slave to start")
    row = line_with(text(snapshot(jobs=(waiting,)), 120), "wait0000000000")
    assert "submitted" in row and "no live slave" in row


def test_an_empty_cluster_reads_as_empty() -> None:
    snap = snapshot(slaves=(SlaveView("slave1", "dead", performance=1.0),), jobs=(),
                    events=(), stream=StreamView(),
                    roles=(RoleView("master-assign", "m", False),
                           RoleView("master-combine", "m", False)))
    frame = text(snap)
    assert "0/1 alive" in frame and "no jobs" in frame and "nothing yet" in frame
    assert "0 reducers alive" in frame


def test_results_stream_and_events_are_shown() -> None:
    frame = text(snapshot())
    assert "3 in stream" in frame and "1 pending" in frame and "lag 2" in frame
    assert "1 reducer alive" in frame
    assert "slave-joined" in line_with(frame, "slave=slave1")


def test_a_short_terminal_keeps_the_slaves_and_cuts_jobs_and_events() -> None:
    jobs = tuple(job(f"job{i:011d}") for i in range(30))
    events = tuple(Event(NOW - i, "job-done", {"job": str(i)}) for i in range(12))
    frame = text(snapshot(jobs=jobs, events=events), 100, height=24)
    assert len(frame.splitlines()) <= 24
    assert "slave1" in frame and "slave2" in frame and "more" in frame


@pytest.mark.parametrize("slaves", [2, 30])
@pytest.mark.parametrize("height", [24, 40])
def test_the_frame_fits_the_terminal_height(slaves: int, height: int) -> None:
    many = tuple(SlaveView(f"s{i}", "idle", performance=1.0) for i in range(slaves))
    jobs = tuple(job(f"job{i:011d}") for i in range(30))
    events = tuple(Event(NOW - i, "job-done", {"job": str(i)}) for i in range(12))
    frame = text(snapshot(slaves=many, jobs=jobs, events=events), 80, height=height)
    assert len(frame.splitlines()) <= height
    assert "job00000000000" in frame and "job-done" in frame


def test_fit_shares_the_rows_slaves_first() -> None:
    slaves = [SlaveView(f"s{i}", "idle") for i in range(5)]
    jobs = [job(str(i)) for i in range(10)]
    events = [Event(NOW, "job-done", {}) for _ in range(10)]
    s, j, e = fit(30, slaves, jobs, events)
    assert len(s) == 5 and len(j) >= 3 and len(e) >= 3
    assert 4 + 9 + len(s) + len(j) + len(e) <= 30


def test_sparkline_and_durations() -> None:
    assert sparkline((0, 1, 8), 8) == "·▁█"
    assert sparkline((0, 0), 0) == "··"
    assert [seconds(v) for v in (3.25, 42, 125, 7300)] == ["3.2s", "42s", "2m05", "2h01"]
