"""The cluster secret: the HMAC key every node signs and verifies payloads with.

Where it comes from, first match wins:

1. ``$RQCLUSTER_SECRET`` (at least 16 characters);
2. the file named by the config's ``security.secret-file`` (its content, stripped);
3. only when Redis is on loopback (a single machine): a per-user file created on first
   use with mode 0600 — ``$RQCLUSTER_SECRET_DIR/cluster-secret``, else
   ``$XDG_CONFIG_HOME/rqcluster/cluster-secret``, else ``~/.config/rqcluster/...`` —
   so the one-machine demo needs no set-up and every local process shares one key.

With Redis anywhere else and no secret configured, rqcluster refuses to run. The secret
is never written to Redis, a log, a command line or the config.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from rqcluster.config import ClusterConfig, current
from rqcluster.errors import ConfigError

SECRET_ENV = "RQCLUSTER_SECRET"
SECRET_DIR_ENV = "RQCLUSTER_SECRET_DIR"
FILE_NAME = "cluster-secret"
MIN_LENGTH = 16

# The key per config object and the environment it was resolved in: slaves ask once per
# unit, and resolving it reads files and home-directory paths (~0.1 ms).
_ENV = (SECRET_ENV, SECRET_DIR_ENV, "XDG_CONFIG_HOME", "HOME")
_cache: dict[tuple[int, tuple[str | None, ...]], tuple[ClusterConfig | None, bytes]] = {}


def forget_cached() -> None:
    """Resolve the secret afresh next time (tests that change files under a config)."""
    _cache.clear()


def default_secret_file() -> Path:
    """The per-user secret file used when Redis is on loopback and none is configured."""
    if os.environ.get(SECRET_DIR_ENV):
        return Path(os.environ[SECRET_DIR_ENV]) / FILE_NAME
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rqcluster" / FILE_NAME


def source(config: ClusterConfig) -> str:
    """Where the secret comes from, for summaries (never the secret itself)."""
    if os.environ.get(SECRET_ENV):
        return f"${SECRET_ENV}"
    if config.security.secret_file is not None:
        return f"file {config.security.secret_file}"
    if config.redis.is_loopback():
        return f"per-user file {default_secret_file()} (made on first use)"
    return "none (set $RQCLUSTER_SECRET or security.secret-file)"


def cluster_key(config: ClusterConfig | None = None) -> bytes:
    """The secret of ``config`` (default: the config this process loaded), as key bytes;
    ConfigError with one actionable line if there is none or it is unusable."""
    config = config or current()
    cache_key = (id(config), tuple(os.environ.get(v) for v in _ENV))
    hit = _cache.get(cache_key)
    if hit is None or hit[0] is not config:
        # No config at all: the defaults, i.e. Redis on loopback and no secret file.
        hit = (config, _resolve(os.environ.get(SECRET_ENV),
                                config.security.secret_file if config else None,
                                config.redis.is_loopback() if config else True))
        _cache[cache_key] = hit
    return hit[1]


def _resolve(env: str | None, secret_file: Path | None, loopback: bool) -> bytes:
    if env:
        return _checked(env.strip(), f"${SECRET_ENV}")
    if secret_file is not None:
        _check_private(secret_file)
        return _checked(_read(secret_file, "security.secret-file"),
                        f"security.secret-file ({secret_file})")
    if not loopback:
        raise ConfigError("security: Redis is not on loopback and no cluster secret is set; "
                          f"set ${SECRET_ENV} or security.secret-file (the same secret on "
                          "every node), e.g. from `python -c 'import secrets; "
                          "print(secrets.token_hex(32))'`")
    return _checked(_per_user_secret(default_secret_file()), f"secret file {default_secret_file()}")


def _checked(text: str, where: str) -> bytes:
    if len(text) < MIN_LENGTH:
        raise ConfigError(f"{where}: the cluster secret must be at least {MIN_LENGTH} "
                          "characters")
    return text.encode()


def _read(path: Path, where: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None


def _per_user_secret(path: Path) -> str:
    """Read the per-user secret, creating it (0600, atomically) if it does not exist yet:
    several processes starting at once all end up with the same secret."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    _check_private(path)
    return _read(path, "cluster secret")


def _check_private(path: Path) -> None:
    """Refuse a secret file that other users can read or write."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the cluster secret file: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: the cluster secret file is open to other users "
                          f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
