"""`rqcluster watch` against a real cluster: a frame and a JSON snapshot while a job runs."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import termios
import time
from collections.abc import Callable

import pytest

from tests.helpers import wait_until
from tests.integration.harness import NodeCluster, clean_env, describe

pytestmark = pytest.mark.integration


def slow(x: int) -> int:
    time.sleep(0.2)
    return x


def test_watch_shows_a_running_job_its_slaves_and_the_masters(cluster: NodeCluster) -> None:
    job = cluster.api.submit("map", function=slow, items=list(range(60)), reduce="sum")
    try:
        wait_until(lambda: job.progress()[0] >= 1, 60,
                   message="no unit of the job finished\n" + cluster.log_tails())

        frame = cluster.cli("watch", "--once")
        assert frame.returncode == 0, describe(frame)
        lines = frame.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, frame.stdout  # not a terminal: 80
        assert "master-assign master alive" in frame.stdout, frame.stdout
        row = next(line for line in lines if line.startswith(job.id))
        assert "running" in row and "/" in row, frame.stdout
        for slave in ("slave1", "slave2"):
            slave_row = next(line for line in lines if line.startswith(slave + " "))
            assert "busy" in slave_row or "idle" in slave_row, frame.stdout
        assert "job-placed" in frame.stdout, frame.stdout

        snap = cluster.cli("watch", "--json")
        assert snap.returncode == 0, describe(snap)
        doc = json.loads(snap.stdout)
        assert doc["round_trips"] == 2
        assert {s["name"]: s["alive"] for s in doc["slaves"]} == {"slave1": True,
                                                                  "slave2": True}
        mine = next(j for j in doc["jobs"] if j["id"] == job.id)
        assert mine["kind"] == "map" and mine["total"] >= 2
        assert mine["state"] in ("running", "done") and mine["done"] >= 1
        assert set(mine["per_slave"]) <= {"slave1", "slave2"} and mine["per_slave"]
        assert doc["broker"]["aof"] is True and doc["broker"]["version"]
        assert [r["alive"] for r in doc["roles"]] == [True, True]
    finally:
        job.cancel()


def read_until(fd: int, done: Callable[[bytes], bool], timeout: float) -> bytes:
    """What the terminal shows until ``done`` says enough (or ``timeout`` s pass)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(out):
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_the_live_dashboard_quits_on_q_or_ctrl_c_and_restores_the_terminal(
        cluster: NodeCluster, key: bytes) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: watch on a terminal of its own
        os.execve(sys.executable, [sys.executable, "-m", "rqcluster", "-c",
                                   str(cluster.config_path), "watch", "--interval", "0.2"],
                  clean_env(COLUMNS="100", LINES="30", TERM="xterm"))
    try:
        before = termios.tcgetattr(fd)
        shown = read_until(fd, lambda out: b"Slaves" in out and b"q quit" in out, 30)
        assert b"\x1b[?1049h" in shown, shown[-2000:]  # the alternate screen
        os.write(fd, key)
        rest = read_until(fd, lambda out: b"\x1b[?1049l" in out, 10)
        assert b"\x1b[?1049l" in rest, rest[-2000:]  # back to the normal screen
        done, status = wait_until(lambda: (r := os.waitpid(pid, os.WNOHANG))[0] and r, 10,
                                  interval=0.05, message="watch did not exit")
        assert os.waitstatus_to_exitcode(status) == 0
        assert termios.tcgetattr(fd)[3] == before[3]  # echo and line mode as they were
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_a_killed_slave_turns_dead_once_its_heartbeat_expires(
        make_cluster: Callable[..., NodeCluster]) -> None:
    c = make_cluster(slaves=(("slave1", 1), ("slave2", 1)), options={"heartbeat-ttl": 2})
    c.start_standard()
    os.killpg(c.procs["slave2"].pid, signal.SIGKILL)  # no goodbye: only the TTL tells
    c.stop_node("slave2")

    def states() -> dict[str, str]:
        proc = c.cli("watch", "--json")
        assert proc.returncode == 0, describe(proc)
        return {s["name"]: s["state"] for s in json.loads(proc.stdout)["slaves"]}

    wait_until(lambda: states() == {"slave1": "idle", "slave2": "dead"}, 30,
               interval=0.5, message="slave2 never shown dead")
    frame = c.cli("watch", "--once")
    row = next(line for line in frame.stdout.splitlines() if line.startswith("slave2 "))
    assert "dead" in row and "1/2 alive" in frame.stdout, frame.stdout
