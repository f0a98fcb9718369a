"""The repository's Procfile under `honcho start`: broker, master and both slaves come up
from $RQCLUSTER_CONFIG, run a job, and all stop on SIGTERM, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rqcluster import Cluster, liveness
from rqcluster.broker import free_port
from rqcluster.kinds.montecarlo import estimate_locally
from tests.helpers import wait_until
from tests.integration.harness import (
    clean_env,
    kill_leftovers,
    processes_mentioning,
    stop_group,
    tail,
    wait_for_exit,
    write_config,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROCFILE = REPO / "Procfile"
VENV_BIN = Path(sys.executable).parent


def test_honcho_start_runs_the_procfile_cluster_and_sigterm_stops_every_process(
        tmp_path: Path) -> None:
    assert PROCFILE.exists(), f"{PROCFILE} is missing"
    honcho = VENV_BIN / "honcho"
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = write_config(tmp_path / "config.json", url)
    data = tmp_path / "data"
    run_dir = tmp_path / "run"  # the processes' working directory: not the repository
    run_dir.mkdir()
    log_path = tmp_path / "honcho.log"
    env = clean_env(RQCLUSTER_CONFIG=str(config), RQCLUSTER_DATA_DIR=str(data),
                    PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    probe = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                 retry=Retry(NoBackoff(), 0))
    cluster = Cluster.from_config(config)
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(honcho), "start", "-f", str(PROCFILE), "-d", str(run_dir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=run_dir, env=env, start_new_session=True)
    try:
        def slaves_up() -> bool:
            assert proc.poll() is None, f"honcho exited early:\n{tail(log_path)}"
            try:
                return set(liveness.live_slaves(probe, cluster.config)) == {"slave1", "slave2"}
            except redis.ConnectionError:
                return False  # the broker is still starting

        wait_until(slaves_up, 60, interval=0.1,
                   message=f"both slaves never had heartbeats:\n{tail(log_path)}")
        assert probe.config_get("appendonly") == {"appendonly": "yes"}

        job = cluster.submit("montecarlo", samples=1_000_000, seed=99, unit_samples=100_000)
        assert job.result(timeout=60) == estimate_locally(1_000_000, 99, 100_000), \
            tail(log_path)
        assert set(job.status().per_slave) == {"slave1", "slave2"}
        cluster.conn.close()
        probe.close()
        assert processes_mentioning(str(config)), "found none of the Procfile's processes"

        proc.send_signal(signal.SIGTERM)
        status = wait_for_exit(proc, 30)

        output = tail(log_path, 200)
        assert status is not None, f"honcho still running 30 s after SIGTERM:\n{output}"
        wait_until(lambda: not processes_mentioning(str(config))
                   and not processes_mentioning(str(data)), 10,
                   message=f"processes left behind: {processes_mentioning(str(config))} "
                           f"{processes_mentioning(str(data))}\n{output}")
        for name in ("broker", "master", "slave1", "slave2"):
            assert f"{name}.1 stopped" in output, output
        # honcho SIGKILLs whatever is still running 5 s after its SIGTERM
        assert "SIGKILL" not in output, f"a process did not stop on SIGTERM:\n{output}"
    finally:
        probe.close()
        stop_group(proc)
        kill_leftovers(str(config))
        kill_leftovers(str(data))
