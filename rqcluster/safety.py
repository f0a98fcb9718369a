"""Is the Redis a cluster is given safe to run on? One check, used by every node and
by ``check-config``.

``check_redis`` returns the problems it finds as one line each (an empty list: safe):

- no authentication on a non-loopback address: anyone on the network can write jobs;
- ``maxmemory-policy`` other than ``noeviction``: Redis may silently drop job keys;
- append-only persistence off: a Redis restart loses every queued and running job;
  ``appendfsync no``: a crash may lose the last ~30 s of writes.

It reads with ``CONFIG GET`` where allowed and falls back to ``INFO`` (which a
least-privilege ACL user may have when ``CONFIG`` is denied).
"""

from __future__ import annotations

import os
from typing import Any

import redis

from rqcluster.config import RedisSettings
from rqcluster.errors import ConfigError

ALLOW_ENV = "RQCLUSTER_ALLOW_UNSAFE_REDIS"


def check_redis(conn: redis.Redis, settings: RedisSettings) -> list[str]:
    """Every reason the Redis behind ``conn`` is unsafe for a cluster configured with
    ``settings``; [] if none. Never changes anything on the server."""
    problems = []
    if not settings.is_loopback() and accepts_anonymous(conn):
        problems.append(f"Redis at {settings.url} accepts clients without a password on a "
                        "non-loopback address: anyone who can reach it can submit code; set "
                        "requirepass or ACL users")
    policy = _setting(conn, "maxmemory-policy", "memory", "maxmemory_policy")
    if policy is not None and policy != "noeviction":
        problems.append(f"Redis maxmemory-policy is {policy}: it may evict job keys; set "
                        "maxmemory-policy noeviction")
    aof = _setting(conn, "appendonly", "persistence", "aof_enabled")
    if aof is not None and aof not in ("yes", "1"):
        problems.append("Redis persistence is off (appendonly no): a restart loses every "
                        "job; set appendonly yes")
    elif _setting_or_none(conn, "appendfsync") == "no":
        problems.append("Redis appendfsync is no: a crash may lose the last ~30 s of "
                        "writes; set appendfsync everysec")
    return problems


def _setting_or_none(conn: redis.Redis, name: str) -> str | None:
    """A setting only CONFIG GET tells (None where CONFIG is denied)."""
    try:
        value = conn.config_get(name).get(name)
    except redis.ResponseError:
        return None
    return None if value is None else str(value.decode() if isinstance(value, bytes)
                                          else value)


def accepts_anonymous(conn: redis.Redis) -> bool:
    """True if the server behind ``conn`` answers a client that sends no credentials."""
    kwargs: dict[str, Any] = dict(conn.connection_pool.connection_kwargs)
    for key in ("username", "password", "credential_provider", "retry", "retry_on_error"):
        kwargs.pop(key, None)
    kwargs["socket_timeout"] = 5
    probe = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=conn.connection_pool.connection_class, **kwargs))
    try:
        return bool(probe.ping())
    except redis.AuthenticationError:
        return False
    except redis.ResponseError as e:  # NOAUTH / NOPERM: authentication is required
        return "NOAUTH" not in str(e) and "NOPERM" not in str(e)
    finally:
        probe.close()


def _setting(conn: redis.Redis, name: str, section: str, field: str) -> str | None:
    """A server setting from CONFIG GET, else from INFO; None if neither is allowed."""
    try:
        value = conn.config_get(name).get(name)
        if value is not None:
            return str(value.decode() if isinstance(value, bytes) else value)
    except redis.ResponseError:
        pass
    try:
        info = conn.info(section)
    except redis.ResponseError:
        return None
    value = info.get(field)
    return None if value is None else str(value)


def refuse_unsafe(conn: redis.Redis, settings: RedisSettings, allow: bool = False,
                  warn: Any = None) -> list[str]:
    """Raise ConfigError listing the problems unless ``allow`` (or $RQCLUSTER_ALLOW_UNSAFE_
    REDIS=1), in which case each is passed to ``warn``; returns the problems."""
    problems = check_redis(conn, settings)
    if not problems:
        return problems
    if allow or os.environ.get(ALLOW_ENV) == "1":
        for p in problems:
            if warn is not None:
                warn(f"unsafe Redis (allowed by --allow-unsafe-redis): {p}")
        return problems
    raise ConfigError("unsafe Redis, refusing to start: " + "; ".join(problems)
                      + " (or pass --allow-unsafe-redis)")
