"""Fixtures shared by every test: one real redis-server per session, emptied per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from rqcluster.broker import Broker, free_port


@pytest.fixture(scope="session", autouse=True)
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The per-user cluster secret of every test process and every node it starts lives in
    a temporary directory, never in the real home; $RQCLUSTER_SECRET is not inherited."""
    saved = {k: os.environ.pop(k, None) for k in ("RQCLUSTER_SECRET", "RQCLUSTER_SECRET_DIR")}
    os.environ["RQCLUSTER_SECRET_DIR"] = str(tmp_path_factory.mktemp("secret"))
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real redis-server for the whole session: starting one per test would be slow."""
    broker = Broker(port=free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def redis_conn(redis_server: Broker) -> Iterator[redis.Redis]:
    """A client to the session's redis-server, flushed first so every test starts empty."""
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushall()
    try:
        yield conn
    finally:
        conn.close()
