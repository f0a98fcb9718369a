"""Connections to the cluster's Redis, made one way for every node.

redis-py 8 sets a 5 s socket timeout by default, which breaks every blocking read that
waits longer (XREADGROUP BLOCK, BLMOVE, a client waiting for a result). rqcluster turns
the socket timeout off and bounds each blocking command by its own timeout instead, and
retries with backoff across broker restarts and while Redis is LOADING its AOF.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import redis
from redis._parsers.encoders import Encoder
from redis.backoff import ExponentialBackoff
from redis.connection import PythonRespSerializer
from redis.exceptions import BusyLoadingError
from redis.retry import Retry

from rqcluster.config import RedisSettings
from rqcluster.errors import BrokerUnavailable

# Retries of a patient client: about a minute of backoff (capped at 2 s) inside one
# command, enough to ride out a broker restart (AOF load included) mid-unit.
PATIENT_RETRIES = 35


# Commands are packed by redis-py's pure-Python serializer, which sends large values and
# memoryviews as they are; the hiredis packer copies every argument into one bytes object
# first (a 128 MiB array write measured 0.92 s with it, 0.44 s without, and the writer
# held the data twice). Replies are still parsed by hiredis.
_PACKER = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)


def connection_kwargs(settings: RedisSettings, patient: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` beyond what the URL says."""
    kwargs: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 15,
        # About 3 s of retries inside one command; longer outages are the loops' to ride
        # out (they catch the error, wait and go on, checking whether they should stop).
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError, BusyLoadingError],
    }
    if patient:
        kwargs["retry"] = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=PATIENT_RETRIES)
    kwargs["command_packer"] = _PACKER
    password = settings.password()
    if password is not None:
        kwargs["password"] = password
    if settings.username is not None:
        kwargs["username"] = settings.username
    kwargs.update(_tls_kwargs(settings))
    return kwargs


def _tls_kwargs(settings: RedisSettings) -> dict[str, str]:
    tls = {}
    if settings.tls_ca_file is not None:
        tls["ssl_ca_certs"] = str(settings.tls_ca_file)
    if settings.tls_cert_file is not None:
        tls["ssl_certfile"] = str(settings.tls_cert_file)
    if settings.tls_key_file is not None:
        tls["ssl_keyfile"] = str(settings.tls_key_file)
    return tls


def connect(settings: RedisSettings, check: bool = True, patient: bool = False,
            name: str | None = None) -> redis.Redis:
    """A client for the cluster's Redis; with ``check``, PING first so an unreachable
    broker is one clear error (exit 2) instead of a traceback deep inside a command.
    A ``patient`` client retries each command for about a minute (a slave mid-unit would
    rather wait for a restarting broker than lose the unit's work). ``name`` is set as
    each connection's client name (what `CLIENT LIST` shows, e.g. which loop it is)."""
    kwargs = connection_kwargs(settings, patient)
    if name is not None:
        kwargs["client_name"] = name
    client = redis.Redis.from_url(settings.url, **kwargs)
    if check:
        ping(client, settings)
    return client


def ping(client: redis.Redis, settings: RedisSettings) -> None:
    """Raise BrokerUnavailable, naming the URL (never the password), unless Redis answers."""
    try:
        _ping_once(client)
    except redis.AuthenticationError as e:
        raise BrokerUnavailable(f"Redis at {settings.url} refused the credentials: {e} "
                                f"(password from ${settings.password_env} or "
                                "redis.password-file)") from None
    except redis.RedisError as e:
        raise BrokerUnavailable(f"cannot reach Redis at {settings.url}: {e} (is the broker "
                                "running? start it with `rqcluster broker`)") from None


def wait_for_broker(settings: RedisSettings, timeout: float = 30.0,
                    on_wait: Callable[[str], None] | None = None) -> redis.Redis:
    """Connect, waiting up to ``timeout`` s for the broker to come up (a Procfile starts
    the broker and the nodes at once); BrokerUnavailable after that."""
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            return connect(settings)
        except BrokerUnavailable as e:
            if "refused the credentials" in str(e) or time.monotonic() >= deadline:
                raise
            if on_wait is not None and not told:
                on_wait(f"waiting up to {timeout:g} s for Redis at {settings.url}")
                told = True
            time.sleep(0.2)


def _ping_once(client: redis.Redis) -> None:
    # A fresh client with no retries: the caller wants a quick yes/no, not 8 backoffs.
    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs["retry"] = Retry(ExponentialBackoff(), retries=0)
    kwargs["socket_timeout"] = 5
    kwargs.pop("retry_on_error", None)
    probe = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=client.connection_pool.connection_class, **kwargs))
    try:
        probe.ping()
    finally:
        probe.close()


def worker_url(settings: RedisSettings) -> str:
    """The Redis URL with credentials and TLS files folded in, for `rq worker`'s settings
    module (RQ builds its connection from a URL). Lives only in the worker's memory."""
    parts = urlsplit(settings.url)
    password = settings.password()
    netloc = parts.netloc
    if password is not None or settings.username is not None:
        user = quote(settings.username or "", safe="")
        auth = f"{user}:{quote(password, safe='')}" if password is not None else user
        netloc = f"{auth}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    query = urlencode(_tls_kwargs(settings))
    joined_query = "&".join(q for q in (parts.query, query) if q)
    return urlunsplit((parts.scheme, netloc, parts.path, joined_query, parts.fragment))
