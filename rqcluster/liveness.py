"""Heartbeats: keys with a short TTL, refreshed while their process lives.

A slave worker refreshes two: its slave's heartbeat (the slave is live: placement sends it
units) and its own worker status (host, pid, the unit it runs and since when: the
dashboard shows it, and the reaper moves a running unit whose worker status is gone).
Masters refresh a role heartbeat. Expiry is Redis's clock, so no two machines' clocks are
ever compared.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from rqcluster import keys
from rqcluster.config import ClusterConfig

PID = os.getpid()
HOST = socket.gethostname()


def ttl_ms(ttl: float) -> int:
    return math.ceil(ttl * 1000)


@dataclass
class WorkerStatus:
    """What one slave worker process is doing, as published in ``keys.worker``."""

    slave: str
    worker: str
    unit: str | None = None  # "job:unit" running now
    since: float | None = None  # unix time the unit started
    started: float = field(default_factory=time.time)

    def begin(self, member: str) -> None:
        self.unit, self.since = member, time.time()

    def end(self) -> None:
        self.unit = self.since = None

    def encode(self) -> str:
        return json.dumps({"slave": self.slave, "worker": self.worker, "host": HOST,
                           "pid": os.getpid(), "unit": self.unit, "since": self.since,
                           "started": self.started, "at": time.time()})


def running_entry(worker: str, slave: str, rest: list[int] | None = None) -> str:
    """The value of a unit's entry in ``keys.RUNNING``; ``rest`` are the units of the same
    batch still to run after it (lost with it if the worker dies)."""
    entry: dict[str, Any] = {"worker": worker, "slave": slave, "at": time.time()}
    if rest:
        entry["rest"] = rest
    return json.dumps(entry)


def beat(conn: redis.Redis, slave: str, ttl: float, **info: Any) -> None:
    """Record that ``slave`` is alive for the next ``ttl`` seconds."""
    record = {"host": HOST, "pid": os.getpid(), "at": time.time(), **info}
    conn.set(keys.heartbeat(slave), json.dumps(record), px=ttl_ms(ttl))


def worker_beat(conn: redis.Redis, status: WorkerStatus, ttl: float) -> bool:
    """Refresh a slave worker's two heartbeats; True if the slave was not live before
    (it just joined, or came back after going silent)."""
    record = {"host": HOST, "pid": os.getpid(), "at": time.time(), "worker": status.worker}
    pipe = conn.pipeline(transaction=False)
    pipe.set(keys.heartbeat(status.slave), json.dumps(record), px=ttl_ms(ttl), get=True)
    pipe.set(keys.worker(status.worker), status.encode(), px=ttl_ms(ttl))
    pipe.sadd(keys.SLAVES, status.slave)
    previous, _, _ = pipe.execute()
    return previous is None


def worker_gone(conn: redis.Redis, status: WorkerStatus) -> None:
    """A worker stopping cleanly: drop its status, and its slave's heartbeat if it is the
    one that wrote it."""
    pipe = conn.pipeline(transaction=False)
    pipe.delete(keys.worker(status.worker))
    pipe.get(keys.heartbeat(status.slave))
    _, current = pipe.execute()
    if current is not None and json.loads(current).get("worker") == status.worker:
        conn.delete(keys.heartbeat(status.slave))


class RoleBeat:
    """Heartbeat of a master role, refreshed from its loop at most every third of the TTL,
    so a waiting client can tell "nobody is running master-assign" from "busy"."""

    def __init__(self, conn: redis.Redis, role: str, node: str, ttl: float) -> None:
        self.conn, self.role, self.node, self.ttl = conn, role, node, ttl
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            record = {"node": self.node, "host": HOST, "pid": os.getpid(),
                      "at": time.time()}
            self.conn.set(keys.role_heartbeat(self.role), json.dumps(record),
                          px=math.ceil(self.ttl * 1000))
            self._next = now + self.ttl / 3


def role_alive(conn: redis.Redis, role: str) -> bool:
    """True while some node running ``role`` heartbeats."""
    return bool(conn.exists(keys.role_heartbeat(role)))


def live_slaves(conn: redis.Redis, config: ClusterConfig) -> dict[str, float]:
    """The configured slaves that have a heartbeat, mapped to their performance."""
    pipe = conn.pipeline(transaction=False)
    for s in config.slaves:
        pipe.exists(keys.heartbeat(s.name))
    alive = pipe.execute()
    return {s.name: s.performance for s, up in zip(config.slaves, alive, strict=True) if up}


def wait_for_slaves(conn: redis.Redis, config: ClusterConfig, timeout: float,
                    poll: float = 0.2,
                    find: Callable[[redis.Redis, ClusterConfig], dict[str, float]] = live_slaves
                    ) -> dict[str, float]:
    """The live slaves (as ``find`` sees them: default the configured ones), waiting up to
    ``timeout`` s for the first one; empty if none came."""
    deadline = time.monotonic() + timeout
    while True:
        live = find(conn, config)
        if live or time.monotonic() >= deadline:
            return live
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
