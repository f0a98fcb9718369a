"""Progress of a waited-for job: plain lines off a terminal, a rich bar on one."""

from __future__ import annotations

import io

from rqcluster.models import JobRecord, JobState
from rqcluster.progress import ProgressReporter, describe_progress


def record(state: JobState, done: int | None, total: int | None, waiting: str | None = None
           ) -> JobRecord:
    remaining = None if total is None or done is None else total - done
    return JobRecord(id="j1", kind="matmul", state=state, params={}, description="",
                     submitted=0.0, total=total, remaining=remaining, waiting=waiting)


def test_a_plain_line_says_units_done_of_total_and_percent():
    line = describe_progress(record(JobState.RUNNING, 3, 8), 1.25)
    assert line == "job j1 running 3/8 units (37%) 1.2 s"


def test_a_job_not_yet_placed_says_why_it_waits():
    line = describe_progress(record(JobState.SUBMITTED, None, None, "no live slave"), 2.0)
    assert line == "job j1 submitted: no live slave (2.0 s)"


def test_plain_progress_prints_changes_and_always_the_final_state():
    out = io.StringIO()
    reporter = ProgressReporter(out, interactive=False)
    reporter(record(JobState.SUBMITTED, None, None))
    reporter(record(JobState.RUNNING, 1, 4))   # within a second of the last line: skipped
    reporter(record(JobState.DONE, 4, 4))      # terminal: always printed
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("job j1 submitted")
    assert lines[-1].startswith("job j1 done 4/4 units (100%)")
    assert len(lines) == 2


def test_on_a_terminal_a_bar_shows_units_done_of_total():
    out = io.StringIO()
    reporter = ProgressReporter(out, interactive=True)
    reporter(record(JobState.RUNNING, 2, 8))
    reporter(record(JobState.DONE, 8, 8))
    reporter.close()
    text = out.getvalue()
    assert "8/8" in text and "job j1" in text


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_add_the_measured_rate_and_time_left():
    out = io.StringIO()
    clock = Clock()
    reporter = ProgressReporter(out, interactive=False, clock=clock)
    reporter(record(JobState.RUNNING, 2, 42))
    clock.now += 4
    reporter(record(JobState.RUNNING, 12, 42))
    clock.now += 2
    reporter(record(JobState.DONE, 42, 42))
    lines = out.getvalue().splitlines()
    assert lines[0] == "job j1 running 2/42 units (4%) 0.0 s"
    assert lines[1] == "job j1 running 12/42 units (28%) 4.0 s, 2.5 units/s, eta 12s"
    assert lines[2] == "job j1 done 42/42 units (100%) 6.0 s, 6.7 units/s"


def test_the_bar_shows_the_rate_and_time_left():
    out = io.StringIO()
    clock = Clock()
    reporter = ProgressReporter(out, interactive=True, clock=clock)
    reporter(record(JobState.RUNNING, 0, 100))
    clock.now += 10
    reporter(record(JobState.RUNNING, 50, 100))
    reporter.close()
    assert "5.0 units/s, eta 10s" in out.getvalue()
