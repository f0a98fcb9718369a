"""Fixtures shared by every test: one real redis-server per session, emptied per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from rqcluster.broker import Broker, free_port


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
