"""The cluster secret: from the environment, a configured file, or (loopback only) a
per-user file made on first use; refused when missing off loopback or open to others."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from rqcluster import secret
from rqcluster.cli import cli
from rqcluster.config import ClusterConfig, parse_config
from rqcluster.errors import ConfigError


def config(url: str = "redis://127.0.0.1:6390/0", **security: Any) -> ClusterConfig:
    doc: dict[str, Any] = {
        "master-assign": {"name": "m", "ip": "10.0.0.1"},
        "master-combine": {"name": "m", "ip": "10.0.0.1"},
        "slaves": [{"name": "s", "ip": "10.0.0.2", "performance": 1}],
        "redis": {"url": url},
    }
    if security:
        doc["security"] = security
    return parse_config(doc)


@pytest.fixture(autouse=True)
def own_secret_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(secret.SECRET_DIR_ENV, str(tmp_path / "secret-dir"))
    monkeypatch.delenv(secret.SECRET_ENV, raising=False)
    secret.forget_cached()
    return tmp_path / "secret-dir"


def test_loopback_without_a_secret_makes_a_private_per_user_file_once(
        own_secret_dir: Path) -> None:
    key = secret.cluster_key(config())
    path = own_secret_dir / secret.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64 and path.read_text().strip().encode() == key
    secret.forget_cached()
    assert secret.cluster_key(config()) == key


def _make_key(_: int) -> bytes:
    return secret.cluster_key(None)


def test_processes_starting_at_once_all_get_the_same_secret(own_secret_dir: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        keys = pool.map(_make_key, range(8))
    assert len(set(keys)) == 1
    assert [p.name for p in own_secret_dir.iterdir()] == [secret.FILE_NAME]


def test_redis_off_loopback_without_a_secret_is_refused_with_advice() -> None:
    with pytest.raises(ConfigError) as info:
        secret.cluster_key(config("redis://10.0.0.1:6379/0"))
    assert "RQCLUSTER_SECRET" in str(info.value) and "security.secret-file" in str(info.value)


def test_the_environment_wins_and_a_short_secret_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secret.SECRET_ENV, "x" * 20)
    assert secret.cluster_key(config("redis://10.0.0.1:6379/0")) == b"x" * 20
    monkeypatch.setenv(secret.SECRET_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        secret.cluster_key(config())


def test_a_configured_secret_file_is_used_and_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "cluster-secret"
    path.write_text("0123456789abcdef0123\n")
    path.chmod(0o644)
    cfg = config("redis://10.0.0.1:6379/0", **{"secret-file": str(path)})
    with pytest.raises(ConfigError, match="chmod 600"):
        secret.cluster_key(cfg)
    path.chmod(0o600)
    assert secret.cluster_key(cfg) == b"0123456789abcdef0123"


def test_a_secret_in_the_config_itself_is_refused() -> None:
    with pytest.raises(ConfigError, match="secrets never go in the config"):
        config(secret="0123456789abcdef0123")


def test_check_config_names_where_the_secret_comes_from_never_the_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secret.SECRET_ENV, "do-not-print-this-secret")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({
        "master-assign": {"name": "m", "ip": "127.0.0.1"},
        "master-combine": {"name": "m", "ip": "127.0.0.1"},
        "slaves": [{"name": "s", "ip": "127.0.0.1", "performance": 1}]}))
    result = CliRunner().invoke(cli, ["-c", str(path), "check-config", "--no-redis", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["security"]["secret"] == "$RQCLUSTER_SECRET"
    assert "do-not-print-this-secret" not in result.output


SECURITY_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**12),
                            st.floats(allow_nan=True), st.text(max_size=8),
                            st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(section=st.one_of(SECURITY_VALUES, st.dictionaries(
    st.sampled_from(["secret-file", "max-payload-bytes", "bogus", "$comment"]),
    SECURITY_VALUES, max_size=3)))
def test_any_security_section_is_accepted_or_refused_in_one_line_naming_it(
        section: Any) -> None:
    try:
        doc: dict[str, Any] = {
            "master-assign": {"name": "m", "ip": "127.0.0.1"},
            "master-combine": {"name": "m", "ip": "127.0.0.1"},
            "slaves": [{"name": "s", "ip": "127.0.0.1", "performance": 1}],
            "security": section}
        cfg = parse_config(doc)
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message and message.startswith("security")
        return
    assert cfg.security.max_payload_bytes >= 1024
