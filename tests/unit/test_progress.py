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
