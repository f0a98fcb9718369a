"""Progress of a job on a terminal: a rich bar on a TTY, plain lines otherwise.

Both say units done / total, the rate and the time left. The rate is measured here, from
when this client first saw the job running (the local clock only: the job record's times
come from other machines' clocks).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from rqcluster.models import JobRecord


class ProgressReporter:
    """Callable given to ``jobs.wait``: shows units done / total, rate and ETA."""

    def __init__(self, stream: IO[str] | None = None, interactive: bool | None = None,
                 clock: Any = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self._bar: Any = None
        self._task: Any = None
        self._last_line = ""
        self._last_time = 0.0
        self._started = clock()
        self._first: tuple[float, int] | None = None  # (time, units done) when first seen

    def __call__(self, record: JobRecord) -> None:
        if self.interactive:
            self._update_bar(record)
        else:
            self._print_line(record)

    def rate(self, record: JobRecord) -> float | None:
        """Units per second since this reporter first saw the job placed."""
        if record.total is None:
            return None
        now = self.clock()
        if self._first is None:
            self._first = (now, record.done_units)
            return None
        took, done = now - self._first[0], record.done_units - self._first[1]
        return done / took if took > 0 and done > 0 else None

    def _print_line(self, record: JobRecord) -> None:
        now = self.clock()
        line = describe_progress(record, now - self._started, self.rate(record))
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
        )
        if self._bar is None:
            self._bar = Progress(TextColumn("job {task.fields[job]} {task.fields[state]}"),
                                 BarColumn(), MofNCompleteColumn(), TextColumn("units"),
                                 TimeElapsedColumn(), TextColumn("{task.fields[rate]}"),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=None, job=record.id, state="", rate="")
        rate = self.rate(record)
        self._bar.update(self._task, total=record.total, completed=record.done_units,
                         state=record.waiting or record.state.value,
                         rate=rate_and_eta(record, rate))
        if record.state.terminal:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def rate_and_eta(record: JobRecord, rate: float | None) -> str:
    """``2.5 units/s, eta 12s`` (``eta`` left out when the job has ended or no rate yet)."""
    if rate is None:
        return ""
    text = f"{rate:.1f} units/s"
    if not record.state.terminal and record.total is not None:
        left = (record.total - record.done_units) / rate
        text += f", eta {left:.0f}s" if left < 120 else f", eta {left / 60:.0f}m"
    return text


def describe_progress(record: JobRecord, elapsed: float, rate: float | None = None) -> str:
    """One plain line: ``job ID running 3/8 units (37%) 1.2 s`` (then the rate and ETA,
    once known)."""
    if record.waiting:
        return f"job {record.id} {record.state.value}: {record.waiting} ({elapsed:.1f} s)"
    if record.total is None:
        return f"job {record.id} {record.state.value} ({elapsed:.1f} s)"
    pct = 100 * record.done_units // max(1, record.total)
    line = (f"job {record.id} {record.state.value} {record.done_units}/{record.total} units "
            f"({pct}%) {elapsed:.1f} s")
    extra = rate_and_eta(record, rate)
    return f"{line}, {extra}" if extra else line
