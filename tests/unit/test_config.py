"""The cluster config: the seed's schema, refused at load with one line naming the key path."""

from __future__ import annotations

import copy
import json
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rqcluster.cli import cli
from rqcluster.config import (
    DEFAULT_PASSWORD_ENV,
    ClusterConfig,
    Options,
    load_config,
    parse_config,
)
from rqcluster.errors import ConfigError, RQClusterError

REPO = Path(__file__).resolve().parents[2]
LOCAL_CONFIG = REPO / "config" / "local.json"

VALID: dict[str, Any] = {
    "$comment": "three slaves, one master",
    "master-assign": {"name": "head", "ip": "10.0.0.1"},
    "master-combine": {"name": "head", "ip": "10.0.0.1"},
    "slaves": [
        {"name": "node-a", "ip": "10.0.0.11", "performance": 1},
        {"name": "node-b", "ip": "10.0.0.12", "performance": 1.5},
        {"name": "gpu-box", "ip": "10.0.0.13", "performance": 2.5},
    ],
    "redis": {"url": "redis://10.0.0.1:6379/0"},
    "options": {"unit-timeout": 600, "heartbeat-ttl": 5, "result-ttl": 3600,
                "units-per-slave": 3},
}


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def refusal(doc: Any, base_dir: Path | None = None) -> str:
    """The one-line message parse_config refuses ``doc`` with (fails if it accepts it)."""
    with pytest.raises(ConfigError) as info:
        parse_config(doc, base_dir=base_dir)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    return message


def write_config(directory: Path, doc: Any, name: str = "cluster.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(doc))
    return path


# --- a good config ------------------------------------------------------------------------

def test_the_seed_schema_loads_into_a_frozen_config(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, valid()))

    assert cfg.master_assign.name == "head" and cfg.master_assign.ip == "10.0.0.1"
    assert cfg.master_combine.name == "head"
    assert [(s.name, s.ip, s.performance) for s in cfg.slaves] == [
        ("node-a", "10.0.0.11", 1.0), ("node-b", "10.0.0.12", 1.5), ("gpu-box", "10.0.0.13", 2.5)]
    assert cfg.redis.url == "redis://10.0.0.1:6379/0"
    assert cfg.options == Options(unit_timeout=600, heartbeat_ttl=5.0, result_ttl=3600,
                                  units_per_slave=3)
    assert cfg.path == (tmp_path / "cluster.json").resolve()
    with pytest.raises(AttributeError):
        cfg.slaves = ()  # type: ignore[misc]


def test_the_shipped_configs_load() -> None:
    for path in sorted((REPO / "config").glob("*.json")):
        assert isinstance(load_config(path), ClusterConfig)


def test_redis_and_options_are_optional_with_defaults() -> None:
    doc = valid()
    del doc["redis"], doc["options"], doc["$comment"]
    cfg = parse_config(doc)
    assert cfg.redis.url.startswith("redis://")
    assert cfg.options == Options()


def test_masters_may_be_different_nodes_and_roles_are_reported_per_name() -> None:
    doc = valid()
    doc["master-combine"] = {"name": "reducer", "ip": "10.0.0.2"}
    cfg = parse_config(doc)
    assert cfg.roles("head") == ["master-assign"]
    assert cfg.roles("reducer") == ["master-combine"]
    assert cfg.roles("gpu-box") == ["slave"]
    assert cfg.node_names() == ["head", "reducer", "node-a", "node-b", "gpu-box"]


def test_an_integral_float_option_is_accepted_as_a_whole_number() -> None:
    doc = valid()
    doc["options"] = {"units-per-slave": 4.0}
    units = parse_config(doc).options.units_per_slave
    assert units == 4 and isinstance(units, int)


def test_ipv6_addresses_are_accepted_and_normalised() -> None:
    doc = valid()
    doc["slaves"][0]["ip"] = "2001:DB8:0:0::1"
    assert parse_config(doc).slaves[0].ip == "2001:db8::1"


def test_asking_for_an_unknown_slave_names_the_known_ones() -> None:
    cfg = parse_config(valid())
    with pytest.raises(ConfigError, match="node-a, node-b, gpu-box"):
        cfg.slave("nope")


# --- missing and unknown keys -------------------------------------------------------------

@pytest.mark.parametrize("key", ["master-assign", "master-combine", "slaves"])
def test_a_missing_mandatory_top_level_key_is_named(key: str) -> None:
    doc = valid()
    del doc[key]
    message = refusal(doc)
    assert message.startswith("(root): ")
    assert repr(key) in message


@pytest.mark.parametrize("key", ["name", "ip", "performance"])
def test_a_slave_missing_a_key_is_named_with_its_index(key: str) -> None:
    doc = valid()
    del doc["slaves"][2][key]
    assert refusal(doc) == f"slaves[2]: missing key {key!r}"


@pytest.mark.parametrize("node", ["master-assign", "master-combine"])
def test_a_master_missing_its_ip_is_named(node: str) -> None:
    doc = valid()
    del doc[node]["ip"]
    assert refusal(doc) == f"{node}: missing key 'ip'"


def test_an_unknown_top_level_key_is_refused_and_the_allowed_keys_listed() -> None:
    doc = valid()
    doc["slave"] = []
    message = refusal(doc)
    assert message.startswith("slave: unknown key")
    for allowed in ("master-assign", "master-combine", "slaves", "redis", "options"):
        assert allowed in message


@pytest.mark.parametrize(
    ("where", "mutate"),
    [
        ("slaves[1].speed", lambda d: d["slaves"][1].update(speed=3)),
        ("master-assign.port", lambda d: d["master-assign"].update(port=1)),
        ("redis.host", lambda d: d["redis"].update(host="10.0.0.1")),
        ("options.retries", lambda d: d["options"].update(retries=3)),
    ],
)
def test_an_unknown_nested_key_is_refused_with_its_path(where: str, mutate: Any) -> None:
    doc = valid()
    mutate(doc)
    assert refusal(doc).startswith(f"{where}: unknown key")


def test_comments_are_allowed_in_every_object() -> None:
    doc = valid()
    for obj in (doc["master-assign"], doc["slaves"][0], doc["redis"], doc["options"]):
        obj["$comment"] = "notes"
    assert len(parse_config(doc).slaves) == 3


# --- wrong types and values ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("where", "mutate", "expected"),
    [
        ("(root)", lambda d: ["not", "an", "object"], "must be an object, got a list"),
        ("master-assign", lambda d: d.update({"master-assign": "head"}),
         "must be an object, got a string"),
        ("slaves", lambda d: d.update(slaves={"name": "x"}),
         "must be a list of slaves, got an object"),
        ("slaves", lambda d: d.update(slaves=[]), "must name at least one slave"),
        ("slaves[0]", lambda d: d["slaves"].__setitem__(0, "node-a"),
         "must be an object, got a string"),
        ("slaves[1].name", lambda d: d["slaves"][1].update(name=7), "got 7"),
        ("slaves[1].name", lambda d: d["slaves"][1].update(name="has space"),
         'got "has space"'),
        ("slaves[1].name", lambda d: d["slaves"][1].update(name=""), 'got ""'),
        ("slaves[1].name", lambda d: d["slaves"][1].update(name="x" * 64), "at most 63"),
        ("master-combine.name", lambda d: d["master-combine"].update(name=None), "got null"),
        ("slaves[0].ip", lambda d: d["slaves"][0].update(ip=10), "must be an IP address"),
        ("redis", lambda d: d.update(redis="redis://x"), "must be an object, got a string"),
        ("options", lambda d: d.update(options=[]), "must be an object, got a list"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_its_path(where: str, mutate: Any,
                                                            expected: str) -> None:
    doc = valid()
    replaced = mutate(doc)
    message = refusal(replaced if replaced is not None else doc)
    assert message.startswith(f"{where}: ")
    assert expected in message


@pytest.mark.parametrize("ip", ["10.0.0", "10.0.0.256", "localhost", "", "10.0.0.1 ",
                                "10.0.0.1/24"])
def test_a_bad_ip_is_refused_and_echoed(ip: str) -> None:
    doc = valid()
    doc["slaves"][1]["ip"] = ip
    message = refusal(doc)
    assert message.startswith("slaves[1].ip: must be an IP address")
    assert json.dumps(ip) in message


def test_duplicate_slave_names_are_refused_at_the_second_one() -> None:
    doc = valid()
    doc["slaves"][2]["name"] = "node-a"
    message = refusal(doc)
    assert message.startswith("slaves[2].name: ")
    assert "'node-a'" in message and "unique" in message


@pytest.mark.parametrize("master", ["master-assign", "master-combine"])
def test_a_master_named_like_a_slave_is_refused(master: str) -> None:
    doc = valid()
    doc[master]["name"] = "node-b"
    message = refusal(doc)
    assert message.startswith(f"{master}.name: ")
    assert "'node-b'" in message


@pytest.mark.parametrize(
    ("performance", "shown"),
    [(0, "0"), (0.0, "0.0"), (-1, "-1"), (-0.5, "-0.5"), (True, "true"), (False, "false"),
     ("fast", '"fast"'), ("2", '"2"'), (None, "null"), ([1], "[1]"),
     (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")],
)
def test_a_performance_that_is_not_a_positive_number_is_refused(performance: Any,
                                                                shown: str) -> None:
    doc = valid()
    doc["slaves"][2]["performance"] = performance
    assert refusal(doc) == f"slaves[2].performance: must be a number > 0, got {shown}"


def test_the_seed_example_message_is_exactly_as_documented() -> None:
    doc = valid()
    doc["slaves"][2]["performance"] = "fast"
    assert refusal(doc) == 'slaves[2].performance: must be a number > 0, got "fast"'


def test_a_performance_too_large_for_a_float_is_a_config_error(tmp_path: Path) -> None:
    # JSON allows integers of any size; Python's json parses them as int.
    path = tmp_path / "big.json"
    text = json.dumps(valid()).replace('"performance": 2.5', '"performance": 1' + "0" * 400)
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^slaves\[2\]\.performance: "):
        load_config(path)


def test_a_slave_name_with_a_trailing_newline_is_refused() -> None:
    # A node name becomes part of queue and key names; a newline must never get in.
    doc = valid()
    doc["slaves"][0]["name"] = "node-a\n"
    assert refusal(doc).startswith("slaves[0].name: ")


# --- redis: secrets never in the file -----------------------------------------------------

@pytest.mark.parametrize("url", ["redis://:hunter2@10.0.0.1:6379/0",
                                 "rediss://admin:hunter2@10.0.0.1:6379/0",
                                 "redis://admin:hunter2@10.0.0.1:notaport/0"])
def test_a_password_inline_in_the_redis_url_is_refused_without_echoing_it(url: str) -> None:
    doc = valid()
    doc["redis"]["url"] = url
    message = refusal(doc)
    assert message.startswith("redis.url: must not contain a password")
    assert "hunter2" not in message


def test_a_password_in_a_url_with_a_bad_scheme_is_not_echoed() -> None:
    doc = valid()
    doc["redis"]["url"] = "http://admin:hunter2@10.0.0.1:6379/0"
    message = refusal(doc)
    assert message.startswith("redis.url: ")
    assert "hunter2" not in message


def test_a_redis_password_key_is_refused_and_points_at_the_alternatives() -> None:
    doc = valid()
    doc["redis"]["password"] = "hunter2"
    message = refusal(doc)
    assert message.startswith("redis.password: ")
    assert "redis.password-file" in message and "redis.password-env" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://10.0.0.1:6379/0", "scheme must be"), ("10.0.0.1:6379", "scheme must be"),
     ("redis://10.0.0.1:99999/0", "bad port"), ("redis:///0", "must name a host"),
     (6379, "must be a string")],
)
def test_a_bad_redis_url_is_refused(url: Any, expected: str) -> None:
    doc = valid()
    doc["redis"]["url"] = url
    message = refusal(doc)
    assert message.startswith("redis.url: ")
    assert expected in message


@pytest.mark.parametrize("key", ["username", "password-env"])
@pytest.mark.parametrize("value", ["", 5, None])
def test_redis_string_settings_must_be_non_empty_strings(key: str, value: Any) -> None:
    doc = valid()
    doc["redis"][key] = value
    assert refusal(doc).startswith(f"redis.{key}: must be a non-empty string")


@pytest.mark.parametrize("key", ["password-file", "tls-ca-file", "tls-cert-file",
                                 "tls-key-file"])
def test_redis_file_settings_must_be_paths(key: str) -> None:
    doc = valid()
    doc["redis"][key] = 3
    assert refusal(doc).startswith(f"redis.{key}: must be a file path")


def test_the_password_comes_from_the_default_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_PASSWORD_ENV, "from-env")
    assert DEFAULT_PASSWORD_ENV == "RQCLUSTER_REDIS_PASSWORD"
    assert parse_config(valid()).redis.password() == "from-env"


def test_no_password_anywhere_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_PASSWORD_ENV, raising=False)
    assert parse_config(valid()).redis.password() is None


def test_redis_password_env_names_another_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_PASSWORD_ENV, "wrong")
    monkeypatch.setenv("MY_CLUSTER_SECRET", "right")
    doc = valid()
    doc["redis"]["password-env"] = "MY_CLUSTER_SECRET"
    assert parse_config(doc).redis.password() == "right"


def test_the_password_file_is_relative_to_the_config_files_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_PASSWORD_ENV, "from-env")
    conf_dir = tmp_path / "conf"
    doc = valid()
    doc["redis"]["password-file"] = "secrets/redis.txt"
    path = write_config(conf_dir, doc)
    (conf_dir / "secrets").mkdir()
    (conf_dir / "secrets" / "redis.txt").write_text("from-file\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cfg = load_config(os.path.relpath(path, elsewhere))

    assert cfg.redis.password_file == (conf_dir / "secrets" / "redis.txt").resolve()
    assert cfg.redis.password() == "from-file"  # the file wins over the variable


def test_an_unreadable_password_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    doc = valid()
    doc["redis"]["password-file"] = "missing.txt"
    cfg = load_config(write_config(tmp_path, doc))
    with pytest.raises(ConfigError, match=r"^redis\.password-file: cannot read .*missing\.txt"):
        cfg.redis.password()


# --- options ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("key", "value", "what"),
    [("unit-timeout", 0, "a whole number >= 1"), ("unit-timeout", 1.5, "a whole number >= 1"),
     ("unit-timeout", "60", "a whole number >= 1"), ("unit-timeout", True, "a whole number"),
     ("result-ttl", -1, "a whole number >= 1"), ("units-per-slave", None, "a whole number"),
     ("units-per-slave", float("inf"), "a whole number"),
     ("heartbeat-ttl", 0.5, "a number >= 1"), ("heartbeat-ttl", "10", "a number >= 1"),
     ("heartbeat-ttl", float("nan"), "a number >= 1"),
     ("heartbeat-ttl", float("inf"), "a number >= 1")],
)
def test_a_bad_option_is_refused_with_its_path(key: str, value: Any, what: str) -> None:
    doc = valid()
    doc["options"][key] = value
    message = refusal(doc)
    assert message.startswith(f"options.{key}: must be {what}")


def test_a_whole_number_option_too_large_for_a_float_is_a_config_error() -> None:
    doc = valid()
    doc["options"]["result-ttl"] = 10**400
    assert refusal(doc).startswith("options.result-ttl: ")


def test_a_fractional_heartbeat_ttl_is_kept() -> None:
    doc = valid()
    doc["options"]["heartbeat-ttl"] = 2.5
    assert parse_config(doc).options.heartbeat_ttl == 2.5


# --- the file -----------------------------------------------------------------------------

def test_invalid_json_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "master-assign": {"name": "head", "ip": "10.0.0.1"},\n'
                    '  "slaves": [,]\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid JSON")
    assert "line 3 column 14" in message
    assert "\n" not in message


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(valid()).replace("gpu-box", "gpu-b\u00f6x").encode("latin-1"))
    with pytest.raises(ConfigError, match=f"^{path}: "):
        load_config(path)


def test_a_missing_config_file_is_a_config_error_that_says_how_to_pass_one(
        tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: config file not found")
    assert "-c" in str(info.value) and "RQCLUSTER_CONFIG" in str(info.value)


def test_the_config_path_comes_from_the_environment_when_not_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, valid())
    monkeypatch.setenv("RQCLUSTER_CONFIG", str(path))
    assert load_config().path == path.resolve()


def test_config_errors_are_rqcluster_errors_with_exit_status_two() -> None:
    assert issubclass(ConfigError, RQClusterError)
    assert ConfigError("x").exit_code == 2


# --- property: random mutations of a valid config -----------------------------------------

json_leaves = (st.none() | st.booleans() | st.integers()
               | st.integers(min_value=10**300, max_value=10**320)
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.text(alphabet=string.printable, max_size=12)
               | st.sampled_from(["10.0.0.1", "::1", "node-a", "head", "redis://:pw@h:1/0",
                                  "redis://h:1/0", "unix:///tmp/r.sock", "x" * 70]))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(string.ascii_letters + "-$", max_size=8), inner, max_size=3),
    max_leaves=6)
config_keys = st.sampled_from(["name", "ip", "performance", "url", "username", "password",
                               "password-env", "password-file", "tls-ca-file", "unit-timeout",
                               "heartbeat-ttl", "result-ttl", "units-per-slave", "$comment",
                               "bogus", "slaves", "redis", "options"])


def _containers(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) else ()
    for key, child in children:
        if isinstance(child, dict | list):
            out += _containers(child, (*path, key))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    doc: Any = valid()
    for _ in range(draw(st.integers(1, 4))):
        if not isinstance(doc, dict | list):
            break
        target = _at(doc, draw(st.sampled_from(_containers(doc))))
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        op = draw(st.sampled_from(["replace", "delete", "add"] if keys else ["add"]))
        if op == "replace":
            target[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "delete":
            del target[draw(st.sampled_from(keys))]
        elif isinstance(target, dict):
            target[draw(config_keys)] = draw(json_values)
        else:
            target.append(draw(json_values))
    if draw(st.booleans()):
        doc = draw(json_values)  # sometimes the whole document is something else
    return doc


def _load_never_fails_otherwise(load: Any) -> None:
    try:
        cfg = load()
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), f"not one line: {str(e)!r}"
        return
    assert isinstance(cfg, ClusterConfig)
    assert all(s.performance > 0 for s in cfg.slaves)
    try:
        cfg.redis.password()
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_any_mutation_of_a_valid_config_loads_or_raises_one_line_config_error(doc: Any) -> None:
    _load_never_fails_otherwise(lambda: parse_config(copy.deepcopy(doc),
                                                     base_dir=Path("/nonexistent")))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_any_corruption_of_a_config_file_loads_or_raises_one_line_config_error(
        data: st.DataObject) -> None:
    text = json.dumps(VALID, indent=1)
    cut = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=5))
    drop = data.draw(st.integers(0, 5))
    corrupted = text[:cut] + insert + text[cut + drop:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cluster.json"
        path.write_text(corrupted, encoding="utf-8")
        _load_never_fails_otherwise(lambda: load_config(path))


# --- the command line ---------------------------------------------------------------------

def test_check_config_on_the_local_config_exits_zero_and_names_both_slaves() -> None:
    result = CliRunner().invoke(cli, ["-c", str(LOCAL_CONFIG), "check-config"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout
    assert "slave1" in result.stdout and "slave2" in result.stdout


def test_check_config_on_a_bad_config_exits_two_with_one_clean_line(tmp_path: Path) -> None:
    doc = valid()
    doc["slaves"][0]["performance"] = -3
    path = write_config(tmp_path, doc)
    result = CliRunner().invoke(cli, ["-c", str(path), "check-config"])
    assert result.exit_code == 2
    assert result.stderr == "error: slaves[0].performance: must be a number > 0, got -3\n"
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_check_config_takes_the_config_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = valid()
    doc["slaves"][1]["name"] = "from-env-slave"
    monkeypatch.setenv("RQCLUSTER_CONFIG", str(write_config(tmp_path, doc)))
    result = CliRunner().invoke(cli, ["check-config", "--no-redis"])
    assert result.exit_code == 0, result.output
    assert "from-env-slave" in result.stdout


def test_check_config_on_a_missing_file_exits_two(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-c", str(tmp_path / "none.json"), "check-config"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "config file not found" in result.stderr
    assert "Traceback" not in result.output


def test_check_config_json_output_parses_and_describes_the_cluster(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_PASSWORD_ENV, raising=False)
    result = CliRunner().invoke(cli, ["-c", str(LOCAL_CONFIG), "check-config", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["name"] for s in summary["slaves"]] == ["slave1", "slave2"]
    assert sum(s["share"] for s in summary["slaves"]) == pytest.approx(1.0, abs=1e-3)
    assert summary["slaves"][1]["share"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["redis"]["password"] == f"none (${DEFAULT_PASSWORD_ENV} is not set)"
    assert summary["options"]["units-per-slave"] == Options().units_per_slave


def test_check_config_json_never_prints_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_PASSWORD_ENV, "hunter2-secret")
    result = CliRunner().invoke(cli, ["-c", str(LOCAL_CONFIG), "check-config", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["redis"]["password"] == f"${DEFAULT_PASSWORD_ENV}"
    assert "hunter2-secret" not in result.output


def test_check_config_names_a_password_file_it_cannot_read_without_failing(
        tmp_path: Path) -> None:
    config = tmp_path / "cluster.json"
    config.write_text(json.dumps({
        "master-assign": {"name": "head", "ip": "10.0.0.1"},
        "master-combine": {"name": "head", "ip": "10.0.0.1"},
        "slaves": [{"name": "a", "ip": "10.0.0.2", "performance": 1}],
        "redis": {"url": "redis://10.0.0.1:6379/0", "password-file": "missing-secret"}}))
    result = CliRunner().invoke(cli, ["-c", str(config), "check-config", "--no-redis"])
    assert result.exit_code == 0, result.output
    assert f"file {tmp_path / 'missing-secret'} (not readable here)" in result.output
