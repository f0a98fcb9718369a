"""The embedded broker against a real redis-server: durability, privacy and clean failures."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from rqcluster.broker import (
    Broker,
    BrokerError,
    default_data_dir,
    find_redis_server,
    free_port,
    run_foreground,
)
from rqcluster.errors import RQClusterError
from tests.helpers import wait_until

MakeBroker = Callable[..., Broker]

# redis-py retries failed connections with backoff for seconds; these tests expect failures.
NO_RETRY = Retry(NoBackoff(), 0)


@pytest.fixture
def make_broker(tmp_path: pathlib.Path) -> Iterator[MakeBroker]:
    """Build brokers on fresh ports and dirs, and make sure none outlives its test."""
    made: list[Broker] = []

    def make(**overrides: object) -> Broker:
        settings: dict[str, object] = {"port": free_port(), "data_dir": tmp_path / f"b{len(made)}"}
        settings.update(overrides)
        broker = Broker(**settings)  # type: ignore[arg-type]
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


def _process_gone(pid: int) -> bool:
    """True once no process has this pid (a zombie still counts as present)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_broker_answers_ping_and_has_aof_on(redis_conn: redis.Redis) -> None:
    assert redis_conn.ping()
    assert redis_conn.config_get("appendonly") == {"appendonly": "yes"}
    assert redis_conn.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert redis_conn.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert redis_conn.config_get("save") == {"save": ""}


def test_data_survives_sigkill_and_restart_from_aof(make_broker: MakeBroker) -> None:
    first = make_broker()
    first.start()
    conn = redis.Redis.from_url(first.url)
    conn.config_set("appendfsync", "always")
    conn.set("survivor", "still here")
    conn.close()
    first.kill()
    assert not first.is_running()

    second = make_broker(port=first.port, data_dir=first.data_dir)
    second.start()
    with redis.Redis.from_url(second.url) as conn:
        assert conn.get("survivor") == b"still here"


def test_password_is_required_and_never_on_the_command_line(make_broker: MakeBroker) -> None:
    secret = 's3cret "pass" word\\'
    broker = make_broker(password=secret)
    broker.start()

    refused = (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)
    with redis.Redis(port=broker.port, retry=NO_RETRY) as anonymous, pytest.raises(refused):
        anonymous.ping()
    with redis.Redis(port=broker.port, password=secret) as authenticated:
        assert authenticated.ping()

    assert broker.pid is not None
    cmdline = pathlib.Path(f"/proc/{broker.pid}/cmdline").read_bytes()
    assert secret.encode() not in cmdline
    assert b"s3cret" not in cmdline
    assert stat.S_IMODE(broker.config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(broker.data_dir.stat().st_mode) == 0o700


def test_url_and_repr_never_show_the_password(tmp_path: pathlib.Path) -> None:
    broker = Broker(port=6390, data_dir=tmp_path, password="hunter2")
    assert broker.url == "redis://127.0.0.1:6390/0"
    assert "hunter2" not in repr(broker)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "redis.example.com"])
def test_non_loopback_bind_without_password_is_refused(make_broker: MakeBroker, host: str) -> None:
    broker = make_broker(host=host)
    with pytest.raises(BrokerError, match=re.escape(f"refusing to bind redis-server to {host}")):
        broker.start()
    assert not broker.is_running()
    assert not broker.config_path.exists()


def test_loopback_aliases_are_accepted_without_password(make_broker: MakeBroker) -> None:
    broker = make_broker(host="127.0.0.2")
    broker.start()
    with redis.Redis.from_url(broker.url) as conn:
        assert conn.ping()


def test_two_brokers_on_different_ports_use_different_dirs(
    make_broker: MakeBroker, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RQCLUSTER_DATA_DIR", str(tmp_path / "data"))
    port_a, port_b = free_port(), free_port()
    while port_b == port_a:
        port_b = free_port()
    dir_a, dir_b = default_data_dir(port_a), default_data_dir(port_b)
    assert dir_a == tmp_path / "data" / f"broker-{port_a}"
    assert dir_b == tmp_path / "data" / f"broker-{port_b}"

    a = make_broker(port=port_a, data_dir=dir_a)
    b = make_broker(port=port_b, data_dir=dir_b)
    a.start()
    b.start()
    with redis.Redis.from_url(a.url) as conn_a, redis.Redis.from_url(b.url) as conn_b:
        conn_a.set("owner", "a")
        conn_b.set("owner", "b")
        assert conn_a.get("owner") == b"a"
        assert conn_b.get("owner") == b"b"
    assert f"port {port_a}\n" in (dir_a / "redis.conf").read_text()
    assert f"port {port_b}\n" in (dir_b / "redis.conf").read_text()


def test_default_data_dir_falls_back_to_xdg_then_home(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RQCLUSTER_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir(7000) == tmp_path / "xdg" / "rqcluster" / "broker-7000"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "share" / "rqcluster" / "broker-7000"
    assert default_data_dir(7000) == expected


def test_start_failure_reports_the_log_tail(redis_server: Broker, make_broker: MakeBroker) -> None:
    squatter = make_broker(port=redis_server.port)
    with pytest.raises(BrokerError) as caught:
        squatter.start()
    message = str(caught.value)
    assert str(redis_server.port) in message
    assert "Address already in use" in message
    assert not squatter.is_running()
    assert redis_server.is_running()


def test_broker_error_is_an_rqcluster_error() -> None:
    assert issubclass(BrokerError, RQClusterError)


def test_find_redis_server_returns_an_executable() -> None:
    path = find_redis_server()
    assert os.access(path, os.X_OK)


def test_stop_is_idempotent_and_leaves_no_process(make_broker: MakeBroker) -> None:
    broker = make_broker()
    with broker:
        pid = broker.pid
        assert pid is not None and broker.is_running()
    assert broker.pid is None and not broker.is_running()
    assert _process_gone(pid)
    broker.stop()
    broker.kill()


def test_run_foreground_rejects_unsafe_urls(tmp_path: pathlib.Path) -> None:
    with pytest.raises(BrokerError, match="redis://"):
        run_foreground("http://127.0.0.1:6379/0", tmp_path, None)
    with pytest.raises(BrokerError, match="refusing to bind"):
        run_foreground("redis://0.0.0.0:6379/0", tmp_path, None)


def test_run_foreground_stops_redis_cleanly_on_sigterm(tmp_path: pathlib.Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    script = (
        "import pathlib, sys\n"
        "from rqcluster.broker import run_foreground\n"
        "sys.exit(run_foreground(sys.argv[1], pathlib.Path(sys.argv[2]), None))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, url, str(tmp_path)])
    try:
        conn = redis.Redis.from_url(url, socket_timeout=2, retry=NO_RETRY)
        wait_until(lambda: _answers(conn), message="foreground broker never answered PING")
        redis_pid = int(conn.info("server")["process_id"])
        conn.set("flushed", "on exit")
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
    assert _process_gone(redis_pid)
    assert "ready to exit" in (tmp_path / "redis.log").read_text()


def _answers(conn: redis.Redis) -> bool:
    """PING that reports 'not yet' instead of raising while redis is still starting."""
    try:
        return bool(conn.ping())
    except redis.exceptions.RedisError:
        return False
