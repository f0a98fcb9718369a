"""The Redis password and the cluster secret reach every node, and nowhere else: not the
config, the command lines, the logs, nor Redis itself (keys, values, AOF)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from rqcluster import Cluster
from rqcluster.broker import Broker, free_port
from rqcluster.kinds.montecarlo import estimate_locally
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

SECRET = "pw-7f3a-ZZ-not-for-logs"
CLUSTER_SECRET = "cluster-secret-91c2-QQ-not-for-redis"


def test_the_password_is_used_by_every_node_and_never_written_anywhere(tmp_path: Path) -> None:
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    (tmp_path / "cluster-secret").write_text(CLUSTER_SECRET + "\n")
    (tmp_path / "cluster-secret").chmod(0o600)
    broker = Broker(free_port(), tmp_path / "redis", password=SECRET)
    config = tmp_path / "cluster.json"
    config.write_text(json.dumps({
        "master-assign": {"name": "master", "ip": "127.0.0.1"},
        "master-combine": {"name": "master", "ip": "127.0.0.1"},
        "slaves": [{"name": "slave1", "ip": "127.0.0.1", "performance": 1}],
        "redis": {"url": broker.url, "password-file": "redis-password"},
        "security": {"secret-file": "cluster-secret"}}))
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("RQCLUSTER_")}
    broker.start()
    try:
        for mode, name in (("assign-reduce", "master"), ("slave", "slave1")):
            with (logs / f"{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "rqcluster", "-c", str(config), "-v", "node",
                     "--mode", mode, "--name", name], stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=env, start_new_session=True))
        cluster = Cluster.from_config(config)
        wait_until(lambda: cluster.conn.exists("rqc:slave:slave1:heartbeat"), 60,
                   message="slave1 never heartbeat through the password-protected broker")
        estimate = cluster.submit("montecarlo", samples=200_000, seed=5,
                                  unit_samples=50_000).result(timeout=60)
        assert estimate == estimate_locally(200_000, 5, 50_000)
        # A shipped function: signed with the cluster secret, verified by the slave.
        assert cluster.submit("map", function=lambda x: 2 * x, items=range(10),
                              reduce="sum").result(timeout=60) == 90

        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=broker.port, password="wrong").ping()
        conn = cluster.conn
        for key in conn.scan_iter(count=1000):
            for secret in (SECRET, CLUSTER_SECRET):
                assert secret.encode() not in key
                dumped = conn.dump(key) or b""
                assert secret.encode() not in dumped, key
        for proc in procs:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert SECRET.encode() not in cmdline and CLUSTER_SECRET.encode() not in cmdline
        conn.execute_command("BGREWRITEAOF")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        broker.stop()
    for path in [*logs.iterdir(), *(tmp_path / "redis").rglob("*")]:
        if path.is_file() and path.name != "redis.conf":  # the 0600 file the broker reads
            assert SECRET.encode() not in path.read_bytes(), path
            assert CLUSTER_SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in config.read_text() and CLUSTER_SECRET not in config.read_text()
    assert "Listening on rqcluster.slave1" in (logs / "slave1.log").read_text()
    assert "done" in (logs / "master.log").read_text()  # -v: the master logged its work
