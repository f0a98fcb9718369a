"""Peak memory of processes: VmHWM of a live process, ru_maxrss of a child that exited."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

MiB = 2**20


def status_fields(pid: int) -> dict[str, int]:
    """The memory lines of /proc/PID/status, in bytes (VmHWM, VmRSS, RssAnon, RssFile)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


def children(pid: int) -> list[int]:
    """The direct children of a live process (a slave node's `rq worker`)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path | None = None,
                 poll: float = 0.02) -> tuple[int, int, int, str]:
    """Run a command to the end; (exit status, peak RSS bytes from the kernel's ru_maxrss,
    peak anonymous RSS bytes seen by polling RssAnon, its output)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, status_fields(proc.pid).get("RssAnon", 0))
        time.sleep(poll)
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    return proc.returncode, usage.ru_maxrss * 1024, peak_anon, output
