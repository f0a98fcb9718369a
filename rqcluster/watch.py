"""`rqcluster watch`: take a snapshot, draw it, again every second, until q or Ctrl-C.

The loop is the only part of the dashboard that does I/O: ``snapshot`` reads Redis,
``dashboard`` draws, this module owns the terminal. On a TTY the screen is rich's
alternate screen and stdin is read in cbreak mode by a thread (so a single ``q`` quits);
both are restored however the loop ends. A broker that goes away is shown, not fatal:
the last frame stays up with the error under it until Redis answers again.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import redis
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from rqcluster.config import ClusterConfig
from rqcluster.dashboard import render
from rqcluster.snapshot import MAX_JOBS, Snapshot, take_snapshot

QUIT_KEYS = (b"q", b"Q")


def print_once(conn: redis.Redis, config: ClusterConfig, console: Console,
               max_jobs: int = MAX_JOBS) -> Snapshot:
    """Print one frame (``watch --once``) and return its snapshot."""
    snap = take_snapshot(conn, config, max_jobs=max_jobs)
    console.print(render(snap, console.width))
    return snap


def run_live(conn: redis.Redis, config: ClusterConfig, console: Console,
             interval: float = 1.0, max_jobs: int = MAX_JOBS,
             stdin: IO[str] | None = None, frames: int | None = None) -> None:
    """Redraw every ``interval`` seconds on the full screen until q or Ctrl-C (or after
    ``frames`` frames: tests)."""
    stop = threading.Event()
    last: Snapshot | None = None
    drawn = 0
    try:
        with quit_keys(stdin or sys.stdin, stop), \
                Live(console=console, screen=True, auto_refresh=False,
                     redirect_stdout=False, redirect_stderr=False) as live:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    last = take_snapshot(conn, config, max_jobs=max_jobs)
                    took = time.perf_counter() - started
                    live.update(render(last, console.width, console.height,
                                       footer=footer(last, took, interval)), refresh=True)
                except redis.RedisError as e:
                    live.update(broker_lost(last, e, console), refresh=True)
                drawn += 1
                if frames is not None and drawn >= frames:
                    break
                stop.wait(max(0.05, interval - (time.perf_counter() - started)))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: the context managers restored the terminal


def footer(snap: Snapshot, took: float, interval: float) -> str:
    return (f"q quit · every {interval:g} s · snapshot {1000 * took:.0f} ms, "
            f"{snap.round_trips} round trip{'s' if snap.round_trips != 1 else ''}")


def broker_lost(last: Snapshot | None, error: Exception, console: Console) -> RenderableType:
    message = Text(f"lost Redis: {error}; retrying (q quits)", style="bold red")
    if last is None:
        return message
    return Group(render(last, console.width, (console.height or 25) - 1), message)


@contextmanager
def quit_keys(stdin: IO[str], stop: threading.Event) -> Iterator[None]:
    """While inside, a ``q`` typed on a terminal sets ``stop`` (stdin in cbreak mode, so
    no Enter is needed and Ctrl-C still interrupts); the terminal mode is restored on the
    way out. Off a terminal, nothing is read."""
    try:
        fd = stdin.fileno()
        interactive = os.isatty(fd)
    except (AttributeError, OSError, ValueError):
        interactive = False
    if not interactive:
        yield
        return
    saved = termios.tcgetattr(fd)
    done = threading.Event()

    def read() -> None:
        while not done.is_set() and not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready and os.read(fd, 1) in QUIT_KEYS:
                stop.set()

    tty.setcbreak(fd)
    reader = threading.Thread(target=read, name="rqcluster-watch-keys", daemon=True)
    reader.start()
    try:
        yield
    finally:
        done.set()
        reader.join(timeout=1)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
