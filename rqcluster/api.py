"""The Python API: ``Cluster``, ``JobHandle`` and the ``@cluster.task`` decorator.

    cluster = Cluster.from_config("config/local.json")
    job = cluster.submit("matmul", a="A.npy", b="B.npy")
    C = job.result(timeout=60)

    @cluster.task
    def square(x):
        return x * x

    square.compute(3)                            # 9, computed on a slave
    square.map(range(1000), reduce="sum")        # sum of squares, batched into units
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

import redis

from rqcluster import enqueue, jobs
from rqcluster.config import ClusterConfig, load_config
from rqcluster.connection import connect
from rqcluster.jobs import JobStatus
from rqcluster.models import JobRecord
from rqcluster.npyfile import check_output
from rqcluster.secret import cluster_key


class Cluster:
    """A handle on one cluster: its config and a lazy Redis connection."""

    def __init__(self, config: ClusterConfig, conn: redis.Redis | None = None) -> None:
        self.config = config
        self._conn = conn

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Cluster:
        """The cluster described by a config file (default: $RQCLUSTER_CONFIG, then
        config/local.json)."""
        return cls(load_config(path))

    @property
    def conn(self) -> redis.Redis:
        if self._conn is None:
            self._conn = connect(self.config.redis)
        return self._conn

    def submit(self, kind: str, out: str | os.PathLike[str] | None = None,
               seed: int | None = None, **params: Any) -> JobHandle:
        """Validate and submit a job; nothing is written if it is refused.

        ``out`` (a .npy path on this machine) makes ``result()`` write the array there and
        return the path instead of the array. ``seed`` is the job seed every unit's
        ``rqcluster.unit_rng()`` derives from (default: random; ``handle.seed`` tells).
        ``submit("map", program="./score.sh", items=...)`` runs a program in any language
        over the items (``docs/protocol.md``)."""
        if out is not None:
            check_output(out, "out")
        job = enqueue.validate(kind, self.config, seed=seed, **params)
        job_id = enqueue.write(self.conn, job, cluster_key(self.config))
        return JobHandle(self, job_id, out=out)

    def job(self, job_id: str) -> JobHandle:
        """A handle on a job submitted earlier (by anyone)."""
        jobs.get_record(self.conn, job_id)
        return JobHandle(self, job_id)

    def jobs(self, limit: int = 20) -> list[JobRecord]:
        return jobs.list_jobs(self.conn, limit)

    def task(self, fn: Callable[..., Any]) -> Task:
        """Decorator: ``f.compute(x)``, ``f.submit(x)`` and ``f.map(items, reduce=)`` run
        ``f`` on the cluster; calling ``f(x)`` still runs it here."""
        return Task(self, fn)


class JobHandle:
    """One submitted job."""

    def __init__(self, cluster: Cluster, job_id: str, out: str | os.PathLike[str] | None = None,
                 transform: Callable[[Any], Any] | None = None) -> None:
        self.cluster = cluster
        self.id = job_id
        self.out = out
        self._transform = transform

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    @property
    def seed(self) -> int | None:
        """The job seed (None for a job recorded before jobs had seeds)."""
        return jobs.get_record(self.cluster.conn, self.id).seed

    def status(self) -> JobStatus:
        return jobs.get_status(self.cluster.conn, self.id)

    def progress(self) -> tuple[int, int | None]:
        """(units done, total units); total is None until the job is placed."""
        record = jobs.get_record(self.cluster.conn, self.id)
        return record.done_units, record.total

    def wait(self, timeout: float | None = None,
             on_progress: Callable[[JobRecord], None] | None = None) -> JobRecord:
        return jobs.wait(self.cluster.conn, self.id, timeout, on_progress)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its result (JobFailed / JobTimeout otherwise)."""
        jobs.raise_for_state(self.wait(timeout))
        value = jobs.get_result(self.cluster.conn, self.id, out=self.out)
        if isinstance(value, jobs.ArrayFile):
            return value.path
        if self._transform is not None:
            value = self._transform(value)
        return value

    def cancel(self) -> bool:
        return jobs.cancel(self.cluster.conn, self.id, self.cluster.config.options.result_ttl)

    def forget(self) -> None:
        """Delete the ended job's record and result from Redis now (InputError if it is
        still running)."""
        jobs.forget(self.cluster.conn, self.id)


class Task:
    """A function that can run on the cluster (the seeds' ``@compute_this``)."""

    def __init__(self, cluster: Cluster, fn: Callable[..., Any]) -> None:
        self.cluster = cluster
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def submit(self, x: Any, seed: int | None = None) -> JobHandle:
        """Run ``f(x)`` on a slave; the handle's result is the return value."""
        handle = self.cluster.submit("map", function=self.fn, items=[x], reduce="list",
                                     seed=seed)
        handle._transform = lambda values: values[0]
        return handle

    def compute(self, x: Any, timeout: float | None = None, seed: int | None = None) -> Any:
        """``f(x)``, computed on a slave."""
        return self.submit(x, seed=seed).result(timeout)

    def map(self, items: Iterable[Any] | Any, reduce: str | Callable[[Any, Any], Any] = "list",
            timeout: float | None = None, seed: int | None = None) -> Any:
        """``f`` over every item (batched into units), reduced by ``"list"``, ``"sum"`` or a
        function of two arguments; ``seed`` makes ``rqcluster.unit_rng()`` reproducible."""
        return self.cluster.submit("map", function=self.fn, items=items, reduce=reduce,
                                   seed=seed).result(timeout)
