"""Adaptive placement with real slaves: one of three slaves declared equal is really four
times slower (its units sleep four times as long: the cost depends on the slave running
them, from RQCLUSTER_NODE), so the idle ones steal from it; a slave joins at run time and
gets units of a job already running; a joined slave drained leaves and its node exits 0;
calibrate measures every slave and writes the config. Behaviour is asserted, never time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from rqcluster import keys
from tests.helpers import wait_until
from tests.integration.harness import NodeCluster, cluster_factory, wait_for_exit

pytestmark = pytest.mark.integration

TIMEOUT = 120.0
SLAVES = (("fast1", 1), ("fast2", 1), ("slow", 1))


def skewed(seconds: float) -> Any:
    """A map function that sleeps ``seconds`` per item, four times as long on "slow"."""
    def work(i: int) -> int:
        import os
        import time
        time.sleep(seconds * (4 if os.environ.get("RQCLUSTER_NODE") == "slow" else 1))
        return i
    return work


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    with cluster_factory(tmp_path_factory, "adaptive", slaves=SLAVES,
                         options={"allow-join": True, "units-per-slave": 8}) as make:
        c = make()
        c.start_standard()
        yield c


def per_slave(cluster: NodeCluster, job_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in
            cluster.conn.hgetall(keys.slave_counts(job_id)).items()}


def job_fields(cluster: NodeCluster, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in cluster.conn.hgetall(keys.job(job_id)).items()}


def test_idle_slaves_steal_from_a_slave_four_times_slower_than_declared(
        cluster: NodeCluster) -> None:
    handle = cluster.api.submit("map", function=skewed(0.1), items=list(range(24)),
                                reduce="sum")
    assert handle.result(timeout=TIMEOUT) == sum(range(24))
    counts, fields = per_slave(cluster, handle.id), job_fields(cluster, handle.id)
    assert int(fields["total"]) == 24 and sum(counts.values()) == 24  # each counted once
    assert int(fields.get("stolen", 0)) >= 3
    assert int(fields["moved"]) == 0 and int(fields["lost"]) == 0  # stealing is no loss
    # an even share is 8 units each; stealing leaves the slow slave far fewer
    assert counts.get("slow", 0) <= 5 < min(counts["fast1"], counts["fast2"])
    # master-assign observed the job: the slow slave measures about a quarter of the others
    observed = wait_until(lambda: _observed(cluster), 10, message="job never observed")
    assert observed["slow"] < 0.5 * min(observed["fast1"], observed["fast2"])
    status = cluster.cli("status", handle.id)
    assert status.returncode == 0 and "observed" in status.stdout and "stolen" in status.stdout


def _observed(cluster: NodeCluster) -> dict[str, float]:
    raw = cluster.conn.hgetall(keys.OBSERVED)
    return {k.decode(): json.loads(v)["performance"] for k, v in raw.items()}


def test_calibrate_measures_every_live_slave_and_writes_the_config(
        cluster: NodeCluster) -> None:
    before = json.loads(cluster.config_path.read_text())
    run = cluster.cli("calibrate", "--write", "--json", timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert set(found["performance"]) == {"fast1", "fast2", "slow"}
    assert min(found["performance"].values()) == 1.0
    after = json.loads(cluster.config_path.read_text())
    assert {s["name"]: s["performance"] for s in after["slaves"]} == found["performance"]
    for s in after["slaves"]:
        s["performance"] = 1
    assert after == before  # nothing else changed


def test_an_unknown_slave_is_refused_without_allow_join(cluster: NodeCluster) -> None:
    doc = json.loads(cluster.config_path.read_text())
    doc["options"]["allow-join"] = False
    closed = cluster.workdir / "closed.json"
    closed.write_text(json.dumps(doc))
    from tests.integration.harness import cli
    run = cli(closed, "node", "--mode", "slave", "--name", "stranger", "--performance", "2")
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: slave 'stranger' is not in")
    assert "allow-join" in run.stderr and "Traceback" not in run.stderr


def test_a_slave_that_joins_gets_units_of_a_running_job_and_leaves_when_drained(
        cluster: NodeCluster) -> None:
    handle = cluster.api.submit("map", function=skewed(0.25), items=list(range(36)),
                                reduce="sum")
    wait_until(lambda: handle.progress()[1] is not None, 30, message="job never placed")
    cluster.spawn("slave", "newbie", extra=("--performance", "2"))  # not in the config
    wait_until(lambda: cluster.check_alive() or cluster.conn.exists(keys.heartbeat("newbie")),
               60, message="the joining slave never beat")
    snap = json.loads(cluster.cli("watch", "--json").stdout)
    joined = [s for s in snap["slaves"] if s["name"] == "newbie"]
    assert joined and joined[0]["joined"] and joined[0]["performance"] == 2.0
    # it gets units of the running job (by stealing); drained mid-job, it finishes the
    # unit it runs, its queued units move on, and the job's answer is still exact
    wait_until(lambda: per_slave(cluster, handle.id).get("newbie", 0) > 0, TIMEOUT,
               message="the joined slave never ran a unit")
    drained = cluster.cli("drain", "newbie")
    assert drained.returncode == 0 and "draining slave newbie" in drained.stdout
    assert handle.result(timeout=TIMEOUT) == sum(range(36))
    counts = per_slave(cluster, handle.id)
    total = int(job_fields(cluster, handle.id)["total"])
    assert counts["newbie"] > 0 and sum(counts.values()) == total  # each once
    assert int(job_fields(cluster, handle.id).get("lost", 0)) == 0
    assert wait_for_exit(cluster.procs["newbie"], 30) == 0  # stopped, not restarted
    cluster.stop_node("newbie")
    wait_until(lambda: not cluster.conn.hexists(keys.JOINED, "newbie"), 15,
               message="drained slave never forgotten")
    snap = json.loads(cluster.cli("watch", "--json").stdout)
    assert "newbie" not in {s["name"] for s in snap["slaves"]}  # gone
