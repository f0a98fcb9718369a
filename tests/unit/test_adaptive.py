"""Observed performance, joining, and calibration: the pure parts, with plain data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rqcluster import calibrate
from rqcluster.adaptive import effective_performance, job_observation, smooth
from rqcluster.config import Slave, load_config, parse_config
from rqcluster.errors import ConfigError
from rqcluster.membership import check_join, worker_slave


def config(**options: object) -> object:
    return parse_config({
        "master-assign": {"name": "m", "ip": "127.0.0.1"},
        "master-combine": {"name": "m", "ip": "127.0.0.1"},
        "slaves": [{"name": "a", "ip": "127.0.0.1", "performance": 1},
                   {"name": "b", "ip": "127.0.0.1", "performance": "auto"}],
        "options": options})


def test_a_job_s_sample_is_its_speed_per_unit_on_the_configured_scale() -> None:
    # three slaves declared 1; c took four times as long per unit
    samples = job_observation({"a": 8, "b": 8, "c": 2}, {"a": 8.0, "b": 8.0, "c": 8.0},
                              {"a": 1.0, "b": 1.0, "c": 1.0})
    assert samples == pytest.approx({"a": 4 / 3, "b": 4 / 3, "c": 1 / 3})
    assert sum(samples.values()) == pytest.approx(3.0)  # the configured total is kept


def test_unit_cost_cancels_out_so_jobs_of_any_size_give_the_same_sample() -> None:
    cheap = job_observation({"a": 10, "b": 10}, {"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 1.0})
    dear = job_observation({"a": 10, "b": 10}, {"a": 100.0, "b": 200.0}, {"a": 1.0, "b": 1.0})
    assert cheap == pytest.approx({"a": 4 / 3, "b": 2 / 3})
    assert dear == pytest.approx(cheap)


def test_a_job_with_fewer_than_two_measured_slaves_says_nothing() -> None:
    assert job_observation({"a": 8, "b": 1}, {"a": 4.0, "b": 9.0}, {"a": 1.0, "b": 1.0}) == {}
    assert job_observation({"a": 8}, {"a": 4.0}, {"a": 1.0}) == {}


def test_samples_are_smoothed_across_jobs() -> None:
    value = None
    for sample in (1.0, 0.5, 0.5, 0.5):
        value = smooth(value, sample)
    assert value == pytest.approx(0.5625)


def test_observed_performance_sizes_shares_only_for_auto_slaves_or_an_adaptive_cluster() -> None:
    fixed, auto = Slave("a", "127.0.0.1", 2.0), Slave("b", "127.0.0.1", 1.0, auto=True)
    assert effective_performance(fixed, 0.5, adaptive=False) == 2.0
    assert effective_performance(fixed, 0.5, adaptive=True) == 0.5
    assert effective_performance(auto, 0.5, adaptive=False) == 0.5
    assert effective_performance(auto, None, adaptive=False) == 1.0  # not measured yet


def test_the_config_accepts_auto_performance_and_the_adaptive_options() -> None:
    cfg = config(adaptive=True, steal=False, **{"allow-join": True})
    assert [(s.performance, s.auto) for s in cfg.slaves] == [(1.0, False), (1.0, True)]
    assert (cfg.options.adaptive, cfg.options.steal, cfg.options.allow_join) == \
        (True, False, True)
    with pytest.raises(ConfigError, match=r"^options.allow-join: must be true or false"):
        config(**{"allow-join": "yes"})


def test_an_unknown_slave_is_refused_unless_the_config_allows_joining() -> None:
    with pytest.raises(ConfigError, match="set options.allow-join to true"):
        check_join(config(), "slave", "new", 2.0)
    assert check_join(config(**{"allow-join": True}), "slave", "new", 2.0) is True
    assert check_join(config(**{"allow-join": True}), "slave", "a", None) is False
    with pytest.raises(ConfigError, match="--performance is only for a slave that joins"):
        check_join(config(**{"allow-join": True}), "slave", "a", 3.0)
    with pytest.raises(ConfigError, match="--performance must be a number > 0"):
        check_join(config(**{"allow-join": True}), "slave", "new", 0.0)
    with pytest.raises(ConfigError, match="needs --name NEW"):
        check_join(config(**{"allow-join": True}), "slave", None, 2.0)
    assert check_join(config(**{"allow-join": True}), "assign", "other", None) is False
    assert worker_slave(config(**{"allow-join": True}), "new") == "new"
    with pytest.raises(ConfigError, match="not in the config"):
        worker_slave(config(), "new")


def test_calibration_is_relative_to_the_slowest_slave() -> None:
    assert calibrate.relative({"a": 0.2, "b": 0.1, "c": 0.4}) == {"a": 2.0, "b": 4.0, "c": 1.0}


def test_writing_calibration_keeps_the_rest_of_the_config_and_replaces_it_whole(
        tmp_path: Path) -> None:
    doc = {"$comment": "mine", "master-assign": {"name": "m", "ip": "127.0.0.1"},
           "master-combine": {"name": "m", "ip": "127.0.0.1"},
           "slaves": [{"name": "a", "ip": "127.0.0.1", "performance": 1, "$comment": "x"},
                      {"name": "b", "ip": "127.0.0.1", "performance": "auto"}],
           "redis": {"url": "redis://127.0.0.1:7000/0"}, "options": {"steal": False}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    assert calibrate.write_config(path, {"a": 2.5, "zz": 9.0}) == ["a"]
    after = json.loads(path.read_text())
    doc["slaves"][0]["performance"] = 2.5  # type: ignore[index]
    assert after == doc
    assert load_config(path).slaves[0].performance == 2.5
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left
