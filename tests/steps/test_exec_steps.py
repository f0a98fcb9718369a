"""A shipped program, one step at a time in this process against a real redis-server: it is
sealed at submit, verified on the slave before it is written or run, and a tampered
one is refused unrun (the job fails and says why)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from rqcluster import enqueue, envelope, keys, liveness
from rqcluster.assign import Assigner
from rqcluster.config import ClusterConfig, parse_config
from rqcluster.execute import execute_unit
from rqcluster.jobs import get_record, get_result
from rqcluster.models import JobState, UnitRecord
from rqcluster.processor import PROGRAM_INPUT
from rqcluster.reduce import Reducer, ensure_group


@pytest.fixture
def config(redis_server, redis_conn: redis.Redis) -> ClusterConfig:
    cfg = parse_config({
        "master-assign": {"name": "master", "ip": "127.0.0.1"},
        "master-combine": {"name": "master", "ip": "127.0.0.1"},
        "slaves": [{"name": "s1", "ip": "127.0.0.1", "performance": 1}],
        "redis": {"url": redis_server.url},
    })
    liveness.beat(redis_conn, "s1", 60)
    ensure_group(redis_conn)
    return cfg


def _placed(conn: redis.Redis, config: ClusterConfig, program: Path) -> str:
    job_id = enqueue.submit(conn, "map", program=str(program), items=[1, 2, 3], reduce="sum")
    assert Assigner(conn, config, "master").step(timeout=0.1) == job_id
    return job_id


def _run_all(conn: redis.Redis, job_id: str) -> None:
    for raw in conn.hvals(keys.units(job_id)):
        unit = UnitRecord.decode(raw)
        execute_unit(conn, job_id, unit.index, unit.slave)


def _script(tmp_path: Path) -> tuple[Path, Path]:
    """A program that leaves a mark when it runs, and the mark's path."""
    marker = tmp_path / "it-ran"
    script = tmp_path / "mark.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\ncat\n")
    return script, marker


def test_a_shipped_program_is_stored_sealed_and_runs_on_the_slave(redis_conn, config,
                                                                  tmp_path) -> None:
    script, marker = _script(tmp_path)
    job_id = _placed(redis_conn, config, script)
    stored = redis_conn.get(f"{keys.job_input(job_id, PROGRAM_INPUT)}:0")
    assert envelope.is_sealed(stored)

    _run_all(redis_conn, job_id)
    while Reducer(redis_conn, config, "master").step(block_ms=10):
        pass
    assert get_result(redis_conn, job_id) == 6
    assert marker.exists()


def test_a_tampered_program_is_refused_unrun_and_fails_its_job(redis_conn, config,
                                                               tmp_path) -> None:
    script, marker = _script(tmp_path)
    job_id = _placed(redis_conn, config, script)
    chunk = f"{keys.job_input(job_id, PROGRAM_INPUT)}:0"
    sealed = bytearray(redis_conn.get(chunk) or b"")
    sealed[-1] ^= 0x01  # one bit of the compressed script
    redis_conn.set(chunk, bytes(sealed))

    _run_all(redis_conn, job_id)

    record = get_record(redis_conn, job_id)
    assert record.state is JobState.FAILED
    assert "program:program" in record.error["message"]
    assert "bad signature" in record.error["message"]
    assert not marker.exists()
