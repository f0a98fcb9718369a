"""The cluster config: the seed's JSON schema, loaded into frozen objects and validated.

Every node of a cluster reads the same file. The mandatory keys are the seed's own
(``master-assign``, ``master-combine``, ``slaves``); rqcluster's additions live under
``redis`` and ``options``. Secrets never appear in the file: the Redis password comes
from an environment variable or a file the config names.

Every problem is reported as one line that starts with the key path, e.g.
``slaves[2].performance: must be a number > 0, got "fast"``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from rqcluster.errors import ConfigError

DEFAULT_CONFIG = Path("config/local.json")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_PASSWORD_ENV = "RQCLUSTER_REDIS_PASSWORD"
AUTO = "auto"  # a slave's "performance": measured, not declared


@dataclass(frozen=True)
class Node:
    """A master node as the config names it."""

    name: str
    ip: str


@dataclass(frozen=True)
class Slave:
    """A slave node and its relative performance (sizes its share of every job)."""

    name: str
    ip: str
    performance: float
    # "performance": "auto" in the config: the slave starts at performance 1 and its
    # observed performance (``rqcluster.adaptive``) sizes its shares once measured.
    auto: bool = False


@dataclass(frozen=True)
class RedisSettings:
    """How every node reaches the shared Redis; secrets are resolved, never stored in JSON."""

    url: str = "redis://127.0.0.1:6390/0"
    username: str | None = None
    password_env: str = DEFAULT_PASSWORD_ENV
    password_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def password(self) -> str | None:
        """The password from the file or environment variable the config names, if any."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip() or None
            except OSError as e:
                raise ConfigError(f"redis.password-file: cannot read {self.password_file}: "
                                  f"{e.strerror}") from e
        return os.environ.get(self.password_env) or None

    def password_source(self) -> str:
        """Where the password comes from, for summaries (never the password itself)."""
        if self.password_file is not None:
            readable = os.access(self.password_file, os.R_OK)
            return f"file {self.password_file}" + ("" if readable else " (not readable here)")
        if os.environ.get(self.password_env):
            return f"${self.password_env}"
        return f"none (${self.password_env} is not set)"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379

    def is_loopback(self) -> bool:
        """True when Redis is on this machine's loopback interface (or a unix socket)."""
        if urlsplit(self.url).scheme == "unix":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


@dataclass(frozen=True)
class Options:
    """Cluster-wide tunables; every one has a default a single machine is happy with."""

    unit_timeout: int = 3600       # seconds a unit may run before RQ stops it
    heartbeat_ttl: float = 10.0    # a slave is dead this long after its last heartbeat
    result_ttl: int = 7 * 86400    # seconds a finished job's record and result are kept
    units_per_slave: int = 4       # granularity: units per slave of average performance
    max_attempts: int = 3          # a unit whose worker died this often fails its job
    memory_budget: int = 2048      # MiB of operands one unit may need (matmul tiles beyond)
    adaptive: bool = False         # every slave's shares follow its observed performance
    steal: bool = True             # idle slaves take queued units from slow ones
    allow_join: bool = False       # slaves not in the config may join at run time


# Largest job (inputs) accepted in one submission unless the config says otherwise.
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024**3


@dataclass(frozen=True)
class SecuritySettings:
    """Where the cluster secret comes from and how big a payload may be.

    The secret itself never appears in the config: it comes from $RQCLUSTER_SECRET, else
    the file named here, else (Redis on loopback only) a per-user file made on first use.
    """

    secret_file: Path | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster: its masters, its slaves, its Redis and its options."""

    master_assign: Node
    master_combine: Node
    slaves: tuple[Slave, ...]
    redis: RedisSettings = field(default_factory=RedisSettings)
    options: Options = field(default_factory=Options)
    path: Path | None = None
    security: SecuritySettings = field(default_factory=SecuritySettings)

    def slave(self, name: str) -> Slave:
        """The slave called ``name``; ConfigError naming the known slaves otherwise."""
        for s in self.slaves:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.slaves)
        raise ConfigError(f"slaves: no slave named {name!r} (the config has: {known})")

    def roles(self, name: str) -> list[str]:
        """The roles the node called ``name`` has in this cluster (may be several)."""
        roles = []
        if self.master_assign.name == name:
            roles.append("master-assign")
        if self.master_combine.name == name:
            roles.append("master-combine")
        if any(s.name == name for s in self.slaves):
            roles.append("slave")
        return roles

    def this_node(self, name: str | None = None) -> str:
        """The node name of this process: ``name``, else $RQCLUSTER_NODE, else the node whose
        name is this host's name or whose ip is one of this host's addresses."""
        name = name or os.environ.get("RQCLUSTER_NODE")
        if name:
            if not self.roles(name):
                raise ConfigError(f"node {name!r} is not in the config "
                                  f"(masters and slaves: {', '.join(self.node_names())})")
            return name
        host = socket.gethostname()
        addrs = _local_addresses(host)
        for candidate in self.node_names():
            node_ip = self._ip_of(candidate)
            if candidate == host or node_ip in addrs:
                return candidate
        raise ConfigError(f"cannot tell which node this is (host {host!r}); pass --name "
                          "or set RQCLUSTER_NODE")

    def node_names(self) -> list[str]:
        names = [self.master_assign.name, self.master_combine.name]
        names += [s.name for s in self.slaves]
        return list(dict.fromkeys(names))

    def _ip_of(self, name: str) -> str:
        nodes: list[Node | Slave] = [self.master_assign, self.master_combine, *self.slaves]
        return next((n.ip for n in nodes if n.name == name), "")


def _local_addresses(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: ``path``, else $RQCLUSTER_CONFIG, else config/local.json."""
    return Path(path or os.environ.get("RQCLUSTER_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Read, parse and validate a config file; ConfigError with one actionable line if bad."""
    p = config_path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found (pass -c PATH or set "
                          "RQCLUSTER_CONFIG)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); a config is a JSON "
                          "file") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: not valid JSON: {e.msg} at line {e.lineno} "
                          f"column {e.colno}") from None
    return parse_config(raw, base_dir=p.resolve().parent, path=p.resolve())


def parse_config(raw: Any, base_dir: Path | None = None, path: Path | None = None) -> ClusterConfig:
    """Validate an already-parsed config document (a dict) into a ClusterConfig."""
    base_dir = base_dir or Path.cwd()
    doc = _mapping(raw, "(root)", required={"master-assign", "master-combine", "slaves"},
                   optional={"redis", "options", "security", "$comment"})
    assign = _node(doc["master-assign"], "master-assign")
    combine = _node(doc["master-combine"], "master-combine")
    slaves = _slaves(doc["slaves"])
    for master, key in ((assign, "master-assign"), (combine, "master-combine")):
        if any(s.name == master.name for s in slaves):
            raise ConfigError(f"{key}.name: {master.name!r} is also a slave's name; a node "
                              "name identifies one machine role (use another name)")
    redis = _redis(doc.get("redis", {}), base_dir)
    options = _options(doc.get("options", {}))
    security = _security(doc.get("security", {}), base_dir)
    config = ClusterConfig(assign, combine, slaves, redis, options, path, security)
    global _current
    _current = config
    return config


# The config this process loaded last: a process serves one cluster, and the parts of
# rqcluster that need its secret or limits but get no config (a slave's input reader,
# the submit size check) find it here.
_current: ClusterConfig | None = None


def current() -> ClusterConfig | None:
    """The config this process parsed last (None before any)."""
    return _current


def _fail(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}")


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, float | int) or isinstance(value, bool) \
        else repr(value)


def _mapping(raw: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, f"must be an object, got {_type(raw)}")
    missing = sorted(required - raw.keys())
    if missing:
        raise _fail(where, f"missing key {missing[0]!r}")
    unknown = sorted(raw.keys() - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional - {"$comment"}))
        raise _fail(f"{where}.{unknown[0]}" if where != "(root)" else unknown[0],
                    f"unknown key (allowed here: {allowed})")
    return raw


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value),
                                                                        type(value).__name__)


def _name(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not NAME_RE.fullmatch(raw):
        raise _fail(where, "must be a name of letters, digits, '_', '.' or '-' (at most 63, "
                    f"starting with a letter or digit), got {_show(raw)}")
    return raw


def _ip(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise _fail(where, f"must be an IP address string, got {_show(raw)}")
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise _fail(where, f"must be an IP address like \"10.0.0.2\", got {_show(raw)}") from None


def _node(raw: Any, where: str) -> Node:
    doc = _mapping(raw, where, required={"name", "ip"}, optional={"$comment"})
    return Node(_name(doc["name"], f"{where}.name"), _ip(doc["ip"], f"{where}.ip"))


def _slaves(raw: Any) -> tuple[Slave, ...]:
    if not isinstance(raw, list):
        raise _fail("slaves", f"must be a list of slaves, got {_type(raw)}")
    if not raw:
        raise _fail("slaves", "must name at least one slave")
    slaves: list[Slave] = []
    for i, item in enumerate(raw):
        where = f"slaves[{i}]"
        doc = _mapping(item, where, required={"name", "ip", "performance"},
                       optional={"$comment"})
        name = _name(doc["name"], f"{where}.name")
        if any(s.name == name for s in slaves):
            raise _fail(f"{where}.name", f"{name!r} is used by another slave; names must be "
                        "unique")
        auto = doc["performance"] == AUTO
        perf = 1.0 if auto else _finite(doc["performance"])
        if perf is None or not perf > 0:
            raise _fail(f"{where}.performance",
                        f"must be a number > 0, got {_show(doc['performance'])}")
        slaves.append(Slave(name, _ip(doc["ip"], f"{where}.ip"), perf, auto))
    return tuple(slaves)


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is not a (finite, representable) number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _redis(raw: Any, base_dir: Path) -> RedisSettings:
    files = {"password-file", "tls-ca-file", "tls-cert-file", "tls-key-file"}
    if isinstance(raw, dict) and "password" in raw:
        raise _fail("redis.password", "secrets never go in the config; name a file with "
                    "redis.password-file or a variable with redis.password-env")
    doc = _mapping(raw, "redis", required=set(),
                   optional={"url", "username", "password-env", "$comment"} | files)
    url = doc.get("url", RedisSettings.url)
    if not isinstance(url, str):
        raise _fail("redis.url", f"must be a string like \"redis://10.0.0.1:6379/0\", "
                    f"got {_show(url)}")
    parts = urlsplit(url)
    if parts.password:  # checked first: no later message may echo it
        raise _fail("redis.url", "must not contain a password; put it in the file named by "
                    "redis.password-file or the variable named by redis.password-env")
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise _fail("redis.url", "scheme must be redis://, rediss:// or unix://, got "
                    f"{parts.scheme + '://' if parts.scheme else 'none'}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _fail("redis.url", f"bad port in {url!r}") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise _fail("redis.url", f"must name a host, got {url!r}")
    settings: dict[str, Any] = {"url": urlunsplit(parts)}
    for key in ("username", "password-env"):
        if key in doc:
            if not isinstance(doc[key], str) or not doc[key]:
                raise _fail(f"redis.{key}", f"must be a non-empty string, got {_show(doc[key])}")
            settings[key.replace("-", "_")] = doc[key]
    for key in sorted(files & doc.keys()):
        value = doc[key]
        if not isinstance(value, str) or not value:
            raise _fail(f"redis.{key}", f"must be a file path, got {_show(value)}")
        settings[key.replace("-", "_")] = (base_dir / value).resolve()
    return RedisSettings(**settings)


def _options(raw: Any) -> Options:
    spec = {"unit-timeout": (int, 1), "heartbeat-ttl": (float, 1), "result-ttl": (int, 1),
            "units-per-slave": (int, 1), "max-attempts": (int, 1), "memory-budget": (int, 1)}
    flags = ("adaptive", "steal", "allow-join")
    doc = _mapping(raw, "options", required=set(),
                   optional=set(spec) | set(flags) | {"$comment"})
    values: dict[str, Any] = {}
    for key in flags:
        if key in doc:
            if not isinstance(doc[key], bool):
                raise _fail(f"options.{key}", f"must be true or false, got {_show(doc[key])}")
            values[key.replace("-", "_")] = doc[key]
    for key, (kind, minimum) in spec.items():
        if key not in doc:
            continue
        value = doc[key]
        number = _finite(value)
        ok = number is not None and number >= minimum
        if kind is int:
            ok = ok and number is not None and number.is_integer()
        if not ok:
            what = "a whole number" if kind is int else "a number"
            raise _fail(f"options.{key}", f"must be {what} >= {minimum}, got {_show(value)}")
        values[key.replace("-", "_")] = kind(number)
    return Options(**values)


def _security(raw: Any, base_dir: Path) -> SecuritySettings:
    if isinstance(raw, dict) and "secret" in raw:
        raise _fail("security.secret", "secrets never go in the config; name a file with "
                    "security.secret-file or set $RQCLUSTER_SECRET")
    doc = _mapping(raw, "security", required=set(),
                   optional={"secret-file", "max-payload-bytes", "$comment"})
    values: dict[str, Any] = {}
    if "secret-file" in doc:
        value = doc["secret-file"]
        if not isinstance(value, str) or not value:
            raise _fail("security.secret-file", f"must be a file path, got {_show(value)}")
        values["secret_file"] = (base_dir / value).resolve()
    if "max-payload-bytes" in doc:
        value = doc["max-payload-bytes"]
        number = _finite(value)
        if number is None or not number.is_integer() or number < 1024:
            raise _fail("security.max-payload-bytes",
                        f"must be a whole number of bytes >= 1024, got {_show(value)}")
        values["max_payload_bytes"] = int(number)
    return SecuritySettings(**values)
