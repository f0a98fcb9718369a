"""Security against a real redis-server: what someone who can write Redis keys (but has
no cluster secret) can and cannot make the cluster do, the Redis safety checks, and TLS
with ACL users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from rqcluster import enqueue, functions, keys, liveness
from rqcluster.assign import Assigner
from rqcluster.broker import Broker, free_port
from rqcluster.config import ClusterConfig, RedisSettings, load_config, parse_config
from rqcluster.connection import connect, worker_url
from rqcluster.errors import DecodeError
from rqcluster.execute import execute_unit
from rqcluster.jobs import get_record, get_result
from rqcluster.kinds.montecarlo import estimate_locally
from rqcluster.models import JobState, UnitRecord
from rqcluster.reduce import Reducer, ensure_group
from rqcluster.safety import check_redis
from tests.helpers import wait_until
from tests.integration.harness import clean_env, write_config
from tests.integration.tlsproxy import TLSProxy, make_certificates

pytestmark = pytest.mark.integration

RQ = shutil.which("rq", path=str(Path(sys.executable).parent)) or "rq"


def make_config(url: str, slaves: tuple[str, ...] = ("s1",)) -> ClusterConfig:
    return parse_config({
        "master-assign": {"name": "master", "ip": "127.0.0.1"},
        "master-combine": {"name": "master", "ip": "127.0.0.1"},
        "slaves": [{"name": s, "ip": "127.0.0.1", "performance": 1} for s in slaves],
        "redis": {"url": url},
    })


@pytest.fixture
def config(redis_server: Broker, redis_conn: redis.Redis) -> ClusterConfig:
    cfg = make_config(redis_server.url)
    liveness.beat(redis_conn, "s1", 60)
    ensure_group(redis_conn)
    return cfg


def units_of(conn: redis.Redis, job_id: str) -> list[UnitRecord]:
    return sorted((UnitRecord.decode(v) for v in conn.hgetall(keys.units(job_id)).values()),
                  key=lambda u: u.index)


def run_worker_burst(config_path: Path, slave: str, cwd: Path,
                     **env: str) -> subprocess.CompletedProcess[str]:
    """The standard `rq worker` of a slave, in burst mode: it drains its queue and exits."""
    return subprocess.run(
        [RQ, "worker", "-c", "workers.settings", "-w", "workers.slave.SlaveWorker", "--burst",
         "-n", f"{slave}.burst"], cwd=cwd, capture_output=True, text=True, timeout=120,
        env=clean_env(RQCLUSTER_CONFIG=str(config_path), RQCLUSTER_NODE=slave, **env),
        stdin=subprocess.DEVNULL)


# --- 2. raw RQ jobs pushed onto a slave's queue ---------------------------------------------

def test_raw_rq_jobs_on_a_slave_queue_are_refused_and_only_signed_units_run(
        redis_server: Broker, redis_conn: redis.Redis, config: ClusterConfig,
        tmp_path: Path) -> None:
    queue_name = keys.slave_queue("s1")
    marker = tmp_path / "pwned"
    # An attacker with write access to Redis but no cluster secret:
    Queue(queue_name, connection=redis_conn).enqueue(os.system, f"touch {marker}-pickle")
    Queue(queue_name, connection=redis_conn, serializer=JSONSerializer).enqueue(
        "os.system", f"touch {marker}-json")
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=40_000, seed=3,
                            unit_samples=10_000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    # ... and a valid unit's signed job data copied under another unit's RQ job id.
    placed = [i.decode() for i in redis_conn.lrange(f"rq:queue:{queue_name}", 0, -1)]
    real = next(i for i in placed if i.startswith("rqc-"))  # a unit or a batch of units
    forged = dict(redis_conn.hgetall(f"rq:job:{real}"))
    redis_conn.hset(f"rq:job:{keys.rq_job_id(job_id, 7)}", mapping=forged)
    redis_conn.rpush(f"rq:queue:{queue_name}", keys.rq_job_id(job_id, 7))

    config_path = write_config(tmp_path / "cluster.json", redis_server.url,
                               slaves=[("s1", 1)])
    proc = run_worker_burst(config_path, "s1", tmp_path)
    output = proc.stdout + proc.stderr

    assert proc.returncode == 0, output
    assert not list(tmp_path.glob("pwned*")), "an injected RQ job ran"
    assert output.count("refused RQ job") == 3, output
    assert "not a signed rqcluster payload" in output
    assert "bad signature" in output  # the replayed one
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.RUNNING and record.remaining == 0  # every real unit ran
    assert redis_conn.llen(f"rq:queue:{queue_name}") == 0


@pytest.mark.parametrize("worker_class", [None, "rq.worker.SimpleWorker"])
def test_rq_worker_with_any_other_worker_class_refuses_to_start(
        redis_server: Broker, redis_conn: redis.Redis, tmp_path: Path,
        worker_class: str | None) -> None:
    """RQ's default worker would unpickle whatever is pushed onto the queue."""
    config_path = write_config(tmp_path / "cluster.json", redis_server.url,
                               slaves=[("s1", 1)])
    marker = tmp_path / "pwned"
    Queue(keys.slave_queue("s1"), connection=redis_conn).enqueue(os.system, f"touch {marker}")
    args = [RQ, "worker", "-c", "workers.settings", "--burst"]
    args += ["-w", worker_class] if worker_class else []
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=clean_env(RQCLUSTER_CONFIG=str(config_path), RQCLUSTER_NODE="s1"),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: a slave runs `rq worker -c workers.settings -w "
                                  "workers.slave.SlaveWorker`")
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


# --- 1. envelopes replayed or tampered in Redis ---------------------------------------------

def test_a_function_copied_from_another_job_is_refused_and_fails_the_job(
        redis_conn: redis.Redis, config: ClusterConfig) -> None:
    honest = enqueue.submit(redis_conn, "map", function=lambda x: x + 1, items=range(8),
                            reduce="sum")
    victim = enqueue.submit(redis_conn, "map", function=lambda x: x * 2, items=range(8),
                            reduce="sum")
    for key in redis_conn.scan_iter(match=keys.job_input(honest, "function") + "*"):
        new = key.decode().replace(honest, victim)
        redis_conn.restore(new, 0, redis_conn.dump(key), replace=True)
    assigner = Assigner(redis_conn, config, "master")
    assigner.step(timeout=0.1)
    assigner.step(timeout=0.1)
    for u in units_of(redis_conn, victim):
        execute_unit(redis_conn, victim, u.index, u.slave)
    record = get_record(redis_conn, victim)
    assert record.state is JobState.FAILED
    assert "bad signature" in record.error["message"]  # type: ignore[index]
    assert "function:function" in record.error["message"]  # type: ignore[index]


def test_a_tampered_unit_spec_is_refused_before_it_is_used(
        redis_conn: redis.Redis, config: ClusterConfig) -> None:
    job_id = enqueue.submit(redis_conn, "montecarlo", samples=20_000, seed=1,
                            unit_samples=10_000)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    unit = units_of(redis_conn, job_id)[0]
    bigger = UnitRecord(unit.index, unit.slave, {**unit.spec, "samples": 10**12},
                        sig=unit.sig)
    redis_conn.hset(keys.units(job_id), str(unit.index), bigger.encode())
    assert execute_unit(redis_conn, job_id, unit.index, "s1").startswith("failed")
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.FAILED
    assert "unit of job" in record.error["message"]  # type: ignore[index]
    assert "bad signature" in record.error["message"]  # type: ignore[index]


# --- 5. version skew ------------------------------------------------------------------------

def test_a_function_pickled_by_other_versions_fails_the_job_naming_both_versions(
        redis_conn: redis.Redis, config: ClusterConfig, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    ours = functions.versions()
    monkeypatch.setattr(functions, "versions",
                        lambda: {"python": "3.12", "cloudpickle": "9.9.9"})
    job_id = enqueue.submit(redis_conn, "map", function=lambda x: x, items=range(4),
                            reduce="sum")
    monkeypatch.undo()
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    for u in units_of(redis_conn, job_id):
        execute_unit(redis_conn, job_id, u.index, u.slave)
    record = get_record(redis_conn, job_id)
    assert record.state is JobState.FAILED
    message = record.error["message"]  # type: ignore[index]
    assert "Python 3.12 with cloudpickle 9.9.9" in message
    assert f"Python {ours['python']} with cloudpickle {ours['cloudpickle']}" in message
    assert "Traceback" not in message


# --- 6. limits -------------------------------------------------------------------------------

def test_a_job_over_the_configured_payload_limit_is_refused_before_any_write(
        redis_server: Broker, redis_conn: redis.Redis, tmp_path: Path) -> None:
    doc = json.loads(write_config(tmp_path / "c.json", redis_server.url).read_text())
    doc["security"] = {"max-payload-bytes": 4096}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    np.save(tmp_path / "A.npy", np.ones((64, 64)))
    np.save(tmp_path / "B.npy", np.ones((64, 2)))
    before = redis_conn.dbsize()
    proc = subprocess.run([sys.executable, "-m", "rqcluster", "-c", str(tmp_path / "c.json"),
                           "enqueue", "matmul", "A.npy", "B.npy"], cwd=tmp_path,
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "max-payload-bytes" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert redis_conn.dbsize() == before


# --- 4. the Redis a node is given -----------------------------------------------------------

@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A redis-server of this test alone, so its settings can be made unsafe."""
    broker = Broker(free_port(), tmp_path / "redis")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_check_redis_names_eviction_no_persistence_and_no_password_off_loopback(
        own_broker: Broker) -> None:
    conn = redis.Redis.from_url(own_broker.url)
    here = RedisSettings(url=own_broker.url)
    assert check_redis(conn, here) == []
    conn.config_set("maxmemory-policy", "allkeys-lru")
    conn.config_set("appendonly", "no")
    # The config names a non-loopback address for this (password-less) server.
    remote = RedisSettings(url="redis://10.20.30.40:6379/0")
    problems = check_redis(conn, remote)
    assert len(problems) == 3, problems
    assert "without a password" in problems[0] and "10.20.30.40" in problems[0]
    assert "allkeys-lru" in problems[1] and "appendonly" in problems[2]
    conn.config_set("requirepass", "s3cret-s3cret")
    authed = redis.Redis.from_url(own_broker.url, password="s3cret-s3cret")
    assert not any("password" in p for p in check_redis(authed, remote))
    authed.config_set("requirepass", "")


def test_check_redis_names_an_appendfsync_that_may_lose_seconds_of_writes(
        own_broker: Broker) -> None:
    conn = redis.Redis.from_url(own_broker.url)
    here = RedisSettings(url=own_broker.url)
    conn.config_set("appendfsync", "no")
    try:
        problems = check_redis(conn, here)
        assert len(problems) == 1 and "appendfsync everysec" in problems[0], problems
    finally:
        conn.config_set("appendfsync", "everysec")
    assert check_redis(conn, here) == []


def test_nodes_refuse_an_unsafe_redis_unless_allowed_and_check_config_reports_it(
        own_broker: Broker, tmp_path: Path) -> None:
    conn = redis.Redis.from_url(own_broker.url)
    conn.config_set("maxmemory-policy", "volatile-lru")
    config_path = write_config(tmp_path / "cluster.json", own_broker.url, slaves=[("s1", 1)])
    base = [sys.executable, "-m", "rqcluster", "-c", str(config_path)]
    before = conn.dbsize()

    checked = subprocess.run([*base, "check-config"], capture_output=True, text=True,
                             env=clean_env(), timeout=60, cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stderr.startswith("error: Redis maxmemory-policy is volatile-lru")

    for mode, name in (("assign", "master"), ("slave", "s1")):
        refused = subprocess.run([*base, "node", "--mode", mode, "--name", name],
                                 capture_output=True, text=True, env=clean_env(),
                                 timeout=60, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("error: unsafe Redis, refusing to start: ")
        assert "--allow-unsafe-redis" in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    # The plain `rq worker` command refuses too.
    worker = run_worker_burst(config_path, "s1", tmp_path)
    assert worker.returncode == 2, worker.stderr
    assert worker.stderr.startswith("error: unsafe Redis") and "Traceback" not in worker.stderr
    assert conn.dbsize() == before

    allowed = subprocess.Popen([*base, "node", "--mode", "assign", "--name", "master",
                                "--allow-unsafe-redis"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=clean_env(),
                               cwd=tmp_path, start_new_session=True)
    try:
        wait_until(lambda: conn.exists(keys.role_heartbeat("master-assign")), 30,
                   message="the allowed master-assign never started")
    finally:
        allowed.terminate()
        out, _ = allowed.communicate(timeout=30)
    assert "unsafe Redis (allowed by --allow-unsafe-redis)" in out


# --- 4. TLS and a least-privilege ACL user for slaves ---------------------------------------

# The README's slave ACL: only rqcluster's and RQ's keys and channels, no admin commands.
SLAVE_ACL = ("on", ">slave-password-1234", "resetkeys", "~rq:*", "~rqc:*", "resetchannels",
             "&rq:*", "-@all", "+@read", "+@write", "+@keyspace", "+@list", "+@hash",
             "+@set", "+@sortedset", "+@string", "+@stream", "+@scripting", "+@pubsub",
             "+@transaction", "+@connection", "+@fast", "-@dangerous", "+info",
             "+client|setname", "+client|getname", "+client|id")


def tls_config(path: Path, port: int, certs: Any, user: str, password_env: str) -> Path:
    doc = json.loads(write_config(path, f"rediss://127.0.0.1:{port}/0",
                                  slaves=[("s1", 1)]).read_text())
    doc["redis"].update({"username": user, "password-env": password_env,
                         "tls-ca-file": str(certs.ca), "tls-cert-file": str(certs.client_cert),
                         "tls-key-file": str(certs.client_key)})
    path.write_text(json.dumps(doc))
    return path


def test_a_job_runs_over_tls_with_acl_users_and_the_slave_user_has_no_admin_commands(
        own_broker: Broker, tmp_path: Path) -> None:
    try:
        certs = make_certificates(tmp_path / "certs")
    except RuntimeError as e:
        pytest.skip(str(e))
    admin = redis.Redis.from_url(own_broker.url)
    admin.acl_setuser("master", enabled=True, passwords=["+master-password-1234"],
                      keys=["*"], channels=["*"], commands=["+@all"])
    admin.execute_command("ACL", "SETUSER", "slave", *SLAVE_ACL)
    admin.acl_setuser("default", enabled=False)  # no anonymous access at all
    env = {"MASTER_PW": "master-password-1234", "SLAVE_PW": "slave-password-1234"}

    with TLSProxy(certs, own_broker.port) as proxy:
        master_cfg = load_config(tls_config(tmp_path / "master.json", proxy.port, certs,
                                            "master", "MASTER_PW"))
        slave_path = tls_config(tmp_path / "slave.json", proxy.port, certs, "slave",
                                "SLAVE_PW")
        os.environ.update(env)
        try:
            conn = connect(master_cfg.redis)
            ensure_group(conn)
            liveness.beat(conn, "s1", 60)
            job_id = enqueue.submit(conn, "montecarlo", samples=30_000, seed=4,
                                    unit_samples=10_000)
            Assigner(conn, master_cfg, "master").step(timeout=0.1)

            proc = run_worker_burst(slave_path, "s1", tmp_path, **env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            reducer = Reducer(conn, master_cfg, "master")
            wait_until(lambda: reducer.step(block_ms=10) == 0
                       and get_record(conn, job_id).state.terminal, 30)
            assert get_result(conn, job_id) == estimate_locally(30_000, 4, 10_000)

            slave_settings = load_config(slave_path).redis
            slave = connect(slave_settings)
            with pytest.raises(redis.exceptions.NoPermissionError):
                slave.flushall()
            with pytest.raises(redis.exceptions.NoPermissionError):
                slave.config_set("appendonly", "no")
            with pytest.raises(redis.exceptions.NoPermissionError):
                slave.set("someone-elses-key", "x")
            assert check_redis(slave, slave_settings) == []  # readable through INFO
            # rq worker's own URL form (credentials and TLS files in the URL) works too.
            assert redis.Redis.from_url(worker_url(slave_settings)).ping()
        finally:
            for k in env:
                os.environ.pop(k, None)
        # Without a client certificate the proxy refuses the handshake.
        no_cert = RedisSettings(url=f"rediss://127.0.0.1:{proxy.port}/0", username="master",
                                password_env="NOPE", tls_ca_file=certs.ca)
        with pytest.raises(Exception):  # noqa: B017 - refused during the TLS handshake
            redis.Redis.from_url(no_cert.url, ssl_ca_certs=str(certs.ca),
                                 socket_connect_timeout=5, socket_timeout=5).ping()
        wait_until(lambda: proxy.handshakes_refused >= 1, 10,
                   message="the proxy never refused a client without a certificate")
    # Plain TCP to the server without credentials is refused (default user is off).
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(own_broker.url).ping()


# --- 3. results are never unpickled on the master -------------------------------------------

def test_a_forged_object_dtype_result_block_is_refused_by_the_reader(
        redis_conn: redis.Redis, config: ClusterConfig, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    a, b = np.arange(24).reshape(6, 4), np.arange(8).reshape(4, 2)
    job_id = enqueue.submit(redis_conn, "matmul", a=a, b=b)
    Assigner(redis_conn, config, "master").step(timeout=0.1)
    for u in units_of(redis_conn, job_id):
        execute_unit(redis_conn, job_id, u.index, u.slave)
    reducer = Reducer(redis_conn, config, "master")
    while reducer.step(block_ms=10):
        pass
    assert np.array_equal(get_result(redis_conn, job_id), a @ b)
    header = json.dumps({"v": {"\x00nd": 0}, "a": [["|O", [3, 2]]]}).encode()
    forged = b"RQCV" + bytes([1]) + len(header).to_bytes(4, "big") + header + b"\0" * 48
    redis_conn.hset(keys.partials(job_id), "0", forged)

    def no_pickle(*args: Any) -> Any:
        raise AssertionError("the master unpickled a result")
    monkeypatch.setattr("pickle.loads", no_pickle)
    with pytest.raises(DecodeError, match="dtype object is not supported"):
        get_result(redis_conn, job_id)
