"""Real processes for the integration tests: a broker, node processes, CLI runs, clean-up.

Everything here starts real programs the way a user would (``python -m rqcluster ...``),
each node in its own process group so teardown can stop it and every child it forked,
and writes every config into a temporary directory with a free port, so the tests never
touch a broker or a config of the machine they run on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from rqcluster import liveness
from rqcluster.api import Cluster
from rqcluster.broker import Broker, free_port
from rqcluster.config import ClusterConfig, load_config
from tests.helpers import wait_until

STOP_DEADLINE = 15.0  # seconds a process gets to exit after SIGTERM before SIGKILL
LOG_TAIL_LINES = 40

# Clusters started and not yet stopped, and those stopped since the last test report (a
# module fixture that fails its set-up stops its cluster before the report is made): the
# conftest prints their logs when a test fails.
ACTIVE: list[NodeCluster] = []
STOPPED: list[NodeCluster] = []


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: none of the caller's rqcluster settings leak in,
    and Python output is unbuffered so logs are complete when a test reads them."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RQCLUSTER_CONFIG", "RQCLUSTER_NODE", "RQCLUSTER_DATA_DIR",
                        "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def write_config(path: Path, url: str, *, master_assign: str = "master",
                 master_combine: str = "master",
                 slaves: Sequence[tuple[str, float]] = (("slave1", 1), ("slave2", 2)),
                 options: dict[str, Any] | None = None) -> Path:
    """Write a cluster config in the seed's schema (all nodes on loopback)."""
    doc: dict[str, Any] = {
        "master-assign": {"name": master_assign, "ip": "127.0.0.1"},
        "master-combine": {"name": master_combine, "ip": "127.0.0.1"},
        "slaves": [{"name": n, "ip": "127.0.0.1", "performance": p} for n, p in slaves],
        "redis": {"url": url},
    }
    if options:
        doc["options"] = options
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def cli(config: Path | str, *args: str, cwd: Path | str | None = None,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rqcluster -c CONFIG ARGS`` and return its real exit status and output."""
    return subprocess.run([sys.executable, "-m", "rqcluster", "-c", str(config), *args],
                          capture_output=True, text=True, cwd=cwd, env=clean_env(),
                          timeout=timeout, stdin=subprocess.DEVNULL)


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """A CLI run, for assertion messages."""
    return (f"$ {' '.join(str(a) for a in proc.args[1:])}\nexit {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}")


def stop_group(proc: subprocess.Popen[Any], deadline: float = STOP_DEADLINE) -> int:
    """SIGTERM a running process's group, SIGKILL it if it outlives ``deadline``; its exit
    status. A process that already exited is not signalled (its pid may be reused)."""
    if proc.poll() is not None:
        return proc.returncode
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)  # also takes any child left in the group
        return proc.wait(timeout=deadline)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes (other than this one) whose command line or environment
    contains ``text``: how a test finds every process it caused, even in other sessions."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if _is_zombie(entry):
                continue
            blob = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in blob:
            found.append(int(entry.name))
    return found


def _is_zombie(entry: Path) -> bool:
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2:].startswith("Z")


def kill_leftovers(text: str) -> list[int]:
    """SIGKILL every process that mentions ``text`` (a test's own tmp path); returns them."""
    pids = processes_mentioning(text)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class NodeCluster:
    """A real redis-server plus node processes for one config, stopped together.

    Nodes run with a working directory of their own (``node_cwd``), so no module a test
    writes into its tmp_path is importable on a slave: user code reaches slaves by value.
    """

    def __init__(self, workdir: Path, *, master_assign: str = "master",
                 master_combine: str = "master",
                 slaves: Sequence[tuple[str, float]] = (("slave1", 1), ("slave2", 2)),
                 options: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.node_cwd = workdir / "node-cwd"
        self.node_cwd.mkdir(exist_ok=True)
        self.broker = Broker(free_port(), workdir / "redis")
        self.config_path = write_config(workdir / "config.json", self.broker.url,
                                        master_assign=master_assign,
                                        master_combine=master_combine, slaves=slaves,
                                        options=options)
        self.config: ClusterConfig = load_config(self.config_path)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped: set[str] = set()  # keys of nodes a test stopped on purpose
        self._conn: redis.Redis | None = None
        self._api: Cluster | None = None

    # --- starting ---

    def start_broker(self) -> None:
        ACTIVE.append(self)
        self.broker.start()

    def spawn(self, mode: str, name: str, key: str | None = None,
              extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start ``rqcluster node --mode MODE --name NAME [EXTRA...]``; ``key`` names it in
        ``procs`` and its log (default: NAME) so one node name can run several processes."""
        key = key or name
        assert key not in self.procs or self.procs[key].poll() is not None, key
        with (self.logs / f"{key}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rqcluster", "-c", str(self.config_path), "node",
                 "--mode", mode, "--name", name, *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.node_cwd, env=clean_env(), start_new_session=True)
        self.procs[key] = proc
        return proc

    def start_standard(self, timeout: float = 60.0) -> None:
        """Broker, the master in assign-reduce mode, and every slave of the config."""
        self.start_broker()
        self.spawn("assign-reduce", self.config.master_assign.name)
        for s in self.config.slaves:
            self.spawn("slave", s.name)
        self.wait_for_slaves([s.name for s in self.config.slaves], timeout)

    def wait_for_slaves(self, names: Iterable[str], timeout: float = 60.0) -> None:
        """Wait until exactly these slaves have heartbeats; fail at once if a node died."""
        want = set(names)

        def up() -> bool:
            self.check_alive()
            return set(liveness.live_slaves(self.conn, self.config)) >= want

        wait_until(up, timeout, interval=0.05,
                   message=f"slaves {sorted(want)} not live after {timeout} s\n"
                           + self.log_tails())

    def check_alive(self) -> None:
        for key, proc in self.procs.items():
            if proc.poll() is not None and key not in self._stopped:
                raise AssertionError(f"node process {key} exited with status "
                                     f"{proc.returncode}:\n{tail(self.logs / f'{key}.log')}")

    # --- using ---

    @property
    def conn(self) -> redis.Redis:
        """A plain client to the broker (for inspecting keys, not via rqcluster)."""
        if self._conn is None:
            self._conn = redis.Redis.from_url(self.broker.url)
        return self._conn

    @property
    def api(self) -> Cluster:
        """The Python API on this cluster, from its config file."""
        if self._api is None:
            self._api = Cluster.from_config(self.config_path)
        return self._api

    def cli(self, *args: str, cwd: Path | str | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return cli(self.config_path, *args, cwd=cwd, timeout=timeout)

    def log_tails(self) -> str:
        parts = [f"=== {key} (pid {proc.pid}, exit {proc.poll()})\n"
                 f"{tail(self.logs / f'{key}.log')}" for key, proc in self.procs.items()]
        if self.broker.log_file is not None:
            parts.append(f"=== redis-server\n{tail(self.broker.log_file, 10)}")
        return "\n".join(parts)

    # --- stopping ---

    def stop_node(self, key: str) -> int:
        self._stopped.add(key)
        return stop_group(self.procs[key])

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a deadline) and the broker; then
        make sure no process that names this cluster's config is left."""
        try:
            for key in self.procs:
                self.stop_node(key)
            if self._conn is not None:
                self._conn.close()
            self.broker.stop()
        finally:
            kill_leftovers(str(self.workdir))
            if self in ACTIVE:
                ACTIVE.remove(self)
                STOPPED.append(self)


@contextlib.contextmanager
def cluster_factory(tmp_path_factory: Any, prefix: str,
                    **defaults: Any) -> Iterator[Callable[..., NodeCluster]]:
    """Make clusters for one test (nothing started yet: the test starts the broker and
    the nodes it wants), with ``defaults`` for NodeCluster's keywords; every cluster made
    is stopped on the way out."""
    made: list[NodeCluster] = []

    def make(**kwargs: Any) -> NodeCluster:
        c = NodeCluster(tmp_path_factory.mktemp(prefix), **{**defaults, **kwargs})
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()


def wait_for_exit(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """The exit status once ``proc`` exits within ``timeout`` s, else None (still running)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
