"""The README's first command: `rqcluster demo` on the embedded defaults."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

pytestmark = pytest.mark.integration


def _demo_processes() -> list[psutil.Process]:
    """Live processes of a demo cluster: by command line (broker, master) or by the
    config in their environment (slaves exec `rq worker`, whose command line omits it)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = proc.environ().get("RQCLUSTER_CONFIG", "")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            env = ""
        if "rqcluster-demo-" in " ".join(proc.info["cmdline"] or []) + env:
            found.append(proc)
    return found


def test_the_demo_runs_both_jobs_checks_them_and_stops_everything_it_started() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rqcluster", "demo", "--size", "256", "--samples", "2000000"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "matmul: C = A @ B, 256x256 float64" in out
    assert "units per slave: slave1 3, slave2 6" in out  # performances 1 and 2
    assert out.count("-> OK") == 2 and out.rstrip().endswith("demo OK")
    assert "stopped the broker, the master and the slaves" in out
    assert _demo_processes() == []
