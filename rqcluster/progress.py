"""Progress of a job on a terminal: a rich bar on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from rqcluster.models import JobRecord


class ProgressReporter:
    """Callable given to ``jobs.wait``: shows units done / total, rate and ETA."""

    def __init__(self, stream: IO[str] | None = None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._bar: Any = None
        self._task: Any = None
        self._last_line = ""
        self._last_time = 0.0
        self._started = time.monotonic()

    def __call__(self, record: JobRecord) -> None:
        if self.interactive:
            self._update_bar(record)
        else:
            self._print_line(record)

    def _print_line(self, record: JobRecord) -> None:
        line = describe_progress(record, time.monotonic() - self._started)
        now = time.monotonic()
        if line == self._last_line or (now - self._last_time < 1.0 and not record.state.terminal
                                       and self._last_line):
            return
        self._last_line, self._last_time = line, now
        print(line, file=self.stream, flush=True)

    def _update_bar(self, record: JobRecord) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        if self._bar is None:
            self._bar = Progress(TextColumn("job {task.fields[job]} {task.fields[state]}"),
                                 BarColumn(), MofNCompleteColumn(), TextColumn("units"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=None, job=record.id, state="")
        state = record.waiting or record.state.value
        self._bar.update(self._task, total=record.total, completed=record.done_units,
                         state=state)
        if record.state.terminal:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def describe_progress(record: JobRecord, elapsed: float) -> str:
    """One plain line: ``job ID running 3/8 units (37%) 1.2 s``."""
    if record.waiting:
        return f"job {record.id} {record.state.value}: {record.waiting} ({elapsed:.1f} s)"
    if record.total is None:
        return f"job {record.id} {record.state.value} ({elapsed:.1f} s)"
    pct = 100 * record.done_units // max(1, record.total)
    return (f"job {record.id} {record.state.value} {record.done_units}/{record.total} units "
            f"({pct}%) {elapsed:.1f} s")
