"""``rqcluster demo``: a whole cluster on this machine, one matmul and one Monte Carlo job.

Starts a real redis-server on a free loopback port (so it never collides with a broker
you already run), a master and every slave of the config as separate processes, runs the
jobs through the same API users call, checks them against numpy, and stops every process
it started, also when something fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rqcluster import liveness
from rqcluster.api import Cluster, JobHandle
from rqcluster.broker import Broker, die_with_parent, free_port
from rqcluster.config import ClusterConfig, load_config
from rqcluster.errors import JobTimeout, RQClusterError

Say = Callable[[str], None]


class LocalCluster:
    """A broker plus node processes on this machine, stopped together."""

    def __init__(self, base: ClusterConfig, workdir: Path) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.broker = Broker(self.port, workdir / "redis")
        raw = json.loads(Path(base.path).read_text()) if base.path else {}
        raw.setdefault("redis", {})["url"] = self.broker.url
        raw["redis"].pop("password-file", None)
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(raw, indent=2))
        self.config = load_config(self.config_path)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 60.0) -> None:
        self.broker.start()
        cfg = self.config
        if cfg.master_assign.name == cfg.master_combine.name:
            self._spawn(cfg.master_assign.name, "assign-reduce")
        else:
            self._spawn(cfg.master_assign.name, "assign")
            self._spawn(cfg.master_combine.name, "reduce")
        for s in cfg.slaves:
            self._spawn(s.name, "slave")
        self._wait_for_slaves(timeout)

    def _spawn(self, name: str, mode: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RQCLUSTER_NODE", None)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "rqcluster", "-c", str(self.config_path), "node",
             "--mode", mode, "--name", name],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=die_with_parent)

    def _wait_for_slaves(self, timeout: float) -> None:
        cluster = Cluster(self.config)
        deadline = time.monotonic() + timeout
        want = {s.name for s in self.config.slaves}
        while set(liveness.live_slaves(cluster.conn, self.config)) != want:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RQClusterError(f"slaves not up after {timeout:g} s")
            time.sleep(0.1)

    def check_alive(self) -> None:
        """RQClusterError with the node's log tail if any process of the cluster exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RQClusterError(f"node {name} exited with status {proc.returncode}:\n"
                                     + self.log_tail(name))
        if not self.broker.is_running():
            raise RQClusterError("the demo's redis-server exited")

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.broker.stop()


def run_demo(config_path: Path, size: int = 2048, samples: int = 100_000_000,
             keep_running: bool = False, say: Say = print) -> int:
    """Run the demo; returns 0 if every check passed."""
    base = load_config(config_path)
    workdir = Path(tempfile.mkdtemp(prefix="rqcluster-demo-"))
    local = LocalCluster(base, workdir)
    ok = False
    try:
        t0 = time.perf_counter()
        local.start()
        slaves = ", ".join(f"{s.name} (performance {s.performance:g})"
                           for s in local.config.slaves)
        say(f"cluster up in {time.perf_counter() - t0:.1f} s: redis-server on "
            f"{local.broker.url} (AOF on), master {local.config.master_assign.name}, "
            f"slaves {slaves}")
        cluster = Cluster(local.config)
        ok = _matmul(cluster, local, workdir, size, say) \
            & _montecarlo(cluster, local, samples, say)
        if keep_running:
            say(f"cluster still running; config {local.config_path}; Ctrl-C to stop")
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            signal.sigwait(stop_signals)
    finally:
        local.stop()
        say("stopped the broker, the master and the slaves")
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"logs kept in {local.logs}")
    say("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1


def _await(job: JobHandle, local: LocalCluster, timeout: float = 900) -> Any:
    """The job's result, checking every second that no process of the cluster died (the
    demo must fail with the dead node's log, not wait out its timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return job.result(timeout=1.0)
        except JobTimeout:
            local.check_alive()
            if time.monotonic() > deadline:
                raise


def _matmul(cluster: Cluster, local: LocalCluster, workdir: Path, size: int,
            say: Say) -> bool:
    rng = np.random.default_rng(2048)
    a, b = rng.random((size, size)), rng.random((size, size))
    np.save(workdir / "A.npy", a)
    np.save(workdir / "B.npy", b)
    say(f"\nmatmul: C = A @ B, {size}x{size} float64 ({a.nbytes / 2**20:.0f} MiB each)")
    t0 = time.perf_counter()
    job = cluster.submit("matmul", a=workdir / "A.npy", b=workdir / "B.npy",
                         out=workdir / "C.npy")
    _await(job, local)
    took = time.perf_counter() - t0
    st = job.status()
    c = np.load(workdir / "C.npy")
    t1 = time.perf_counter()
    expected = a @ b
    numpy_took = time.perf_counter() - t1
    ok = bool(np.allclose(c, expected, rtol=1e-12, atol=0))
    say(f"  rqcluster  {took:6.2f} s  (submit, {st.record.total} units, combine, C.npy written)")
    say(f"  numpy      {numpy_took:6.2f} s  (one process, same machine)")
    say("  units per slave: " + ", ".join(f"{s} {n}" for s, n in st.per_slave.items()))
    say(f"  check: max |C - A@B| = {np.max(np.abs(c - expected)):.2e} -> "
        f"{'OK' if ok else 'MISMATCH'} (allclose, rtol 1e-12)")
    return ok


def _montecarlo(cluster: Cluster, local: LocalCluster, samples: int, say: Say) -> bool:
    say(f"\nmontecarlo: pi from {samples:,} random points, seed 2026")
    t0 = time.perf_counter()
    job = cluster.submit("montecarlo", samples=samples, seed=2026)
    estimate = _await(job, local)
    took = time.perf_counter() - t0
    st = job.status()
    error = abs(estimate - math.pi)
    tolerance = 6 * math.sqrt(math.pi * (4 - math.pi) / samples)  # 6 standard errors
    ok = error < tolerance
    units = f"{st.record.total} unit" + ("s" if st.record.total != 1 else "")
    say(f"  rqcluster  {took:6.2f} s  ({units})  pi ~ {estimate:.8f}")
    say("  units per slave: " + ", ".join(f"{s} {n}" for s, n in st.per_slave.items()))
    say(f"  check: |estimate - pi| = {error:.2e} -> {'OK' if ok else 'TOO FAR'} "
        f"(< 6 standard errors = {tolerance:.1e})")
    return ok
