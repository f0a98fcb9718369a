"""Slave heartbeats: a key with a short TTL per slave, refreshed while the slave lives.

The same records serve placement today (units go only to live slaves) and the dashboard
and dead-slave reaper later.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

import redis

from rqcluster import keys
from rqcluster.config import ClusterConfig


def beat(conn: redis.Redis, slave: str, ttl: float, **info: Any) -> None:
    """Record that ``slave`` is alive for the next ``ttl`` seconds."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time(), **info}
    conn.set(keys.heartbeat(slave), json.dumps(record), px=math.ceil(ttl * 1000))


class RoleBeat:
    """Heartbeat of a master role, refreshed from its loop at most every third of the TTL,
    so a waiting client can tell "nobody is running master-assign" from "busy"."""

    def __init__(self, conn: redis.Redis, role: str, node: str, ttl: float) -> None:
        self.conn, self.role, self.node, self.ttl = conn, role, node, ttl
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            record = {"node": self.node, "host": socket.gethostname(), "pid": os.getpid(),
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
