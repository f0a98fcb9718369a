"""The peers' task functions (plain RQ imports them by path, Celery registers them, Dask
ships them), doing exactly the work rqcluster's units do, with the same kernels."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from rqcluster.kinds.montecarlo import count_inside


def noop(i: int) -> None:
    return None


def ident(i: int) -> int:
    return i


def square(x: int) -> int:
    return x * x


def add_all(*values: int) -> int:
    return sum(values)


def square_plus_one(x: int) -> int:
    return x * x + 1


def chunk_sum(lo: int, hi: int) -> int:
    """sum(x*x+1) over range(lo, hi): a chunk of the map workload returning a partial sum."""
    return sum(x * x + 1 for x in range(lo, hi))


def sleep10(i: int) -> int:
    time.sleep(0.01)
    return 1


def mc_count(samples: int, seed: int, stream: int) -> int:
    """Points inside the quarter circle, drawn exactly like an rqcluster montecarlo unit."""
    seq = np.random.SeedSequence(seed, spawn_key=(stream,))
    return count_inside(np.random.default_rng(seq), samples)


def celery_app(url: str) -> Any:
    """A Celery app on ``url`` (broker and result backend) with the tasks above."""
    from celery import Celery
    celery = Celery("bench", broker=url, backend=url)
    celery.conf.update(task_serializer="json", result_serializer="json",
                       accept_content=["json"], worker_prefetch_multiplier=16,
                       broker_connection_retry_on_startup=True, result_expires=600)
    for fn in (noop, square_plus_one, chunk_sum, sleep10, mc_count):
        celery.task(name=fn.__name__)(fn)
    return celery


# The app a `celery -A benchmarks.peer_tasks:app worker` process loads.
app = celery_app(os.environ["BENCH_CELERY_URL"]) if "BENCH_CELERY_URL" in os.environ else None


def skewed_sleep(i: int, seconds: float, factors: dict[Any, float]) -> int:
    """Sleep ``seconds`` times this Dask worker's slowness factor (by worker name): the
    stealing workload's simulated heterogeneous cluster, as Dask runs it."""
    from distributed import get_worker
    time.sleep(seconds * factors.get(get_worker().name, 1.0))
    return i
