"""Node modes as separate processes: assign and reduce apart, two reducers sharing the
results stream, mode/name mismatches, slaves that start late, and `rqcluster broker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rqcluster import keys
from rqcluster.broker import free_port
from rqcluster.kinds.montecarlo import estimate_locally
from rqcluster.models import JobState
from rqcluster.node import client_name
from tests.helpers import wait_until
from tests.integration.harness import (
    NodeCluster,
    clean_env,
    kill_leftovers,
    processes_mentioning,
    stop_group,
    wait_for_exit,
    write_config,
)

pytestmark = pytest.mark.integration

TIMEOUT = 60
COMBINERS = ("combiner-1", "combiner-2")


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """master-assign and master-combine on different nodes: one `assign` process, TWO
    `reduce` processes of the same node, two slaves; 50 units per slave."""
    c = NodeCluster(tmp_path_factory.mktemp("split"), master_assign="assigner",
                    master_combine="combiner", options={"units-per-slave": 50})
    try:
        c.start_broker()
        c.spawn("assign", "assigner")
        for key in COMBINERS:
            c.spawn("reduce", "combiner", key=key)
        for s in c.config.slaves:
            c.spawn("slave", s.name)
        c.wait_for_slaves(["slave1", "slave2"])

        def both_reducers_reading() -> bool:
            c.check_alive()
            readers = [cl for cl in c.conn.client_list() if cl.get("cmd") == "xreadgroup"
                       and cl.get("name") == client_name("reduce", "combiner")]
            return len(readers) == len(COMBINERS)

        wait_until(both_reducers_reading, TIMEOUT,
                   message="the two reduce processes never read the results stream\n"
                           + c.log_tails())
        yield c
    finally:
        c.stop()


def combiner_stats(c: NodeCluster) -> dict[str, int]:
    raw = c.conn.hgetall(keys.COMBINER_STATS)
    return {k if isinstance(k, str) else k.decode(): int(v) for k, v in raw.items()}


def stored_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}


def test_two_reducers_share_the_partials_of_a_400_unit_job_without_double_counting(
        split: NodeCluster) -> None:
    samples, seed, unit = 400 * 10_000, 4242, 10_000
    before = combiner_stats(split)

    job = split.api.submit("montecarlo", samples=samples, seed=seed, unit_samples=unit)
    estimate = job.result(timeout=TIMEOUT)

    assert estimate == estimate_locally(samples, seed, unit)
    assert job.progress() == (400, 400)
    shares = stored_since(before, combiner_stats(split))
    assert len(shares) == 2, f"partials stored per reducer: {shares}"
    assert all(n > 0 for n in shares.values()), shares
    assert sum(shares.values()) == 400
    assert all(name.startswith("combiner@") for name in shares)


def test_a_map_over_20000_items_on_split_nodes_is_exact_and_counted_once(
        split: NodeCluster) -> None:
    before = combiner_stats(split)

    job = split.api.submit("map", function=lambda i: i * i, items=range(20_000),
                           reduce="sum")
    total = job.result(timeout=TIMEOUT)

    assert total == sum(i * i for i in range(20_000))
    units = job.status().record.total
    assert units is not None and units > 2 * 4, "units-per-slave 50 should cut more units"
    assert sum(stored_since(before, combiner_stats(split)).values()) == units


# --- modes the named node does not have -----------------------------------------------------

@pytest.mark.parametrize(("mode", "name", "expected"), [
    ("slave", "master", "master"),
    ("assign", "slave1", "slave1"),
], ids=["slave-mode-for-the-master", "assign-mode-for-a-slave"])
def test_a_node_refuses_a_mode_its_name_does_not_have_with_exit_2(
        make_cluster: Callable[..., NodeCluster], mode: str, name: str, expected: str) -> None:
    c = make_cluster()  # not started: the refusal must come before any Redis is needed
    proc = c.spawn(mode, name)

    status = wait_for_exit(proc, 30)

    if status is None:
        stop_group(proc)
        pytest.fail(f"`node --mode {mode} --name {name}` kept running instead of refusing")
    log = (c.logs / f"{name}.log").read_text()
    assert status == 2, log
    assert "Traceback" not in log, log
    lines = log.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], log


def test_the_raw_rq_worker_command_refuses_a_name_that_is_not_a_slave_with_one_line(
        make_cluster: Callable[..., NodeCluster]) -> None:
    c = make_cluster()
    rq = str(Path(sys.executable).parent / "rq")
    done = subprocess.run([rq, "worker", "-c", "workers.settings", "-w",
                           "workers.slave.SlaveWorker"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RQCLUSTER_CONFIG": str(c.config_path),
                                           "RQCLUSTER_NODE": "master"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("error: slaves: no slave named 'master' "
                                   "(the config has: slave1, slave2)")


# --- no live slave --------------------------------------------------------------------------

def waiting_for_a_slave(c: NodeCluster, job_id: str) -> Callable[[], bool]:
    def check() -> bool:
        c.check_alive()
        record = c.api.job(job_id).status().record
        return record.state is JobState.SUBMITTED and "no live slave" in (record.waiting or "")
    return check


def test_a_job_submitted_while_no_slave_runs_waits_then_completes_once_a_slave_starts(
        make_cluster: Callable[..., NodeCluster]) -> None:
    c = make_cluster()
    c.start_broker()
    c.spawn("assign-reduce", "master")
    job = c.api.submit("montecarlo", samples=300_000, seed=11, unit_samples=100_000)

    wait_until(waiting_for_a_slave(c, job.id), TIMEOUT,
               message=f"job {job.id} never said it waits for a live slave")
    shown = c.cli("status", job.id)
    assert shown.returncode == 0 and "no live slave" in shown.stdout, shown

    c.spawn("slave", "slave1")

    assert job.result(timeout=TIMEOUT) == estimate_locally(300_000, 11, 100_000)
    assert job.status().per_slave == {"slave1": 3}


def test_every_job_queued_while_no_slave_runs_says_it_waits_for_a_slave(
        make_cluster: Callable[..., NodeCluster]) -> None:
    c = make_cluster()
    c.start_broker()
    c.spawn("assign-reduce", "master")
    jobs = [c.api.submit("montecarlo", samples=200_000, seed=s, unit_samples=100_000)
            for s in (1, 2, 3)]

    for job in jobs:
        wait_until(waiting_for_a_slave(c, job.id), 10,
                   message=f"job {job.id} (of {[j.id for j in jobs]}) never said it waits "
                           f"for a live slave: {c.api.job(job.id).status().record}")

    c.spawn("slave", "slave2")
    for s, job in zip((1, 2, 3), jobs, strict=True):
        assert job.result(timeout=TIMEOUT) == estimate_locally(200_000, s, 100_000)


# --- rqcluster broker -----------------------------------------------------------------------

def test_the_broker_command_runs_redis_with_aof_and_stops_cleanly_on_sigterm(
        tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = write_config(tmp_path / "config.json", url)
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "rqcluster", "-c", str(config), "broker"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=tmp_path,
                            env=clean_env(RQCLUSTER_DATA_DIR=str(data)),
                            start_new_session=True)
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                  retry=Retry(NoBackoff(), 0))
    try:
        def answers() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, 30, message="`rqcluster broker` never answered PING")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert str(data) in str(client.config_get("dir")["dir"])
        server_pid = int(client.info("server")["process_id"])
        client.close()

        proc.send_signal(signal.SIGTERM)
        status = wait_for_exit(proc, 20)

        assert status == 0, proc.stdout.read() if proc.stdout else ""
        assert processes_mentioning(str(data)) == [], f"redis-server {server_pid} outlived it"
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()
        stop_group(proc)
        if proc.stdout:
            proc.stdout.close()
        kill_leftovers(str(data))
