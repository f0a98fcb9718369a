"""How long one `rqcluster watch` frame takes on a busy cluster's records.

    .venv/bin/python benchmarks/watch_frame.py [--frames 40] [--width 120]

Starts its own redis-server on a free loopback port (rqcluster's broker), fills it with
the records a cluster of 20 slaves, 100 jobs and 100,000 queued units publishes (heart-
beats, worker statuses, running units, slave stats and rate buckets, job records,
per-slave counts and attempts, RQ queues and held-unit sets, results stream, events),
then times the snapshot (Redis reads) and the drawing of the frame separately. It runs
the same with 1,000 queued units to show the cost does not grow with the queues.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis
from rich.console import Console

from rqcluster import events, keys, liveness
from rqcluster.broker import Broker, free_port
from rqcluster.config import ClusterConfig, Node, Options, RedisSettings, Slave
from rqcluster.dashboard import render
from rqcluster.models import JobRecord, JobState
from rqcluster.reduce import ensure_group
from rqcluster.snapshot import take_snapshot

SLAVES = 20
JOBS = 100
TTL = 10.0


def cluster_config(url: str) -> ClusterConfig:
    return ClusterConfig(
        master_assign=Node("master", "127.0.0.1"), master_combine=Node("master", "127.0.0.1"),
        slaves=tuple(Slave(f"slave{i:02d}", f"10.0.0.{i + 10}", 1.0 + i % 3)
                     for i in range(SLAVES)),
        redis=RedisSettings(url=url), options=Options(heartbeat_ttl=TTL))


def populate(conn: redis.Redis, config: ClusterConfig, queued: int) -> None:
    """The records of a busy cluster: 100 jobs (60 running), ``queued`` units waiting."""
    conn.flushall()
    now = time.time()
    t = conn.time()[0]
    pipe = conn.pipeline(transaction=False)
    job_ids = [f"{int(now) - 1000 + i:08x}{i:06x}" for i in range(JOBS)]
    running = job_ids[-60:]
    for i, job_id in enumerate(job_ids):
        state = (JobState.RUNNING if job_id in running else JobState.DONE if i < 30
                 else JobState.FAILED if i < 35 else JobState.SUBMITTED)
        total = None if state is JobState.SUBMITTED else 1000
        done = 1000 if state is JobState.DONE else 400 if total else 0
        record = JobRecord(
            id=job_id, kind="montecarlo", state=state, params={"samples": 10**9},
            description="montecarlo of 1,000,000,000 samples", submitted=now - 1000 + i,
            total=total, remaining=None if total is None else total - done,
            started=now - 900 + i if total else None,
            finished=now - 10 * i if state in (JobState.DONE, JobState.FAILED) else None,
            error={"unit": 3, "slave": "slave01", "message": "ValueError: boom"}
            if state is JobState.FAILED else None)
        pipe.hset(keys.job(job_id), mapping=record.encode())  # type: ignore[arg-type]
        pipe.zadd(keys.JOBS_INDEX, {job_id: record.submitted})
        if total:
            pipe.hset(keys.slave_counts(job_id),
                      mapping={s.name: done // SLAVES for s in config.slaves})
        if state is JobState.RUNNING:  # 100 units started of each, a few twice
            pipe.hset(keys.attempts(job_id),
                      mapping={str(u): 1 + (u % 25 == 0) for u in range(100)})
        elif total:  # ended jobs keep their attempts: 1,000 fields each
            pipe.hset(keys.attempts(job_id), mapping={str(u): 1 for u in range(1000)})
    per_slave = queued // SLAVES
    for n, s in enumerate(config.slaves):
        worker = f"{s.name}.{4000 + n}"
        status = liveness.WorkerStatus(s.name, worker)
        member = keys.unit_member(running[n % len(running)], 500 + n)
        status.begin(member)
        pipe.set(keys.heartbeat(s.name), json.dumps({"host": "h", "pid": 4000 + n,
                                                     "at": now, "worker": worker}),
                 px=liveness.ttl_ms(TTL))
        pipe.set(keys.worker(worker), status.encode(), px=liveness.ttl_ms(TTL))
        pipe.hset(keys.RUNNING, member, liveness.running_entry(worker, s.name))
        pipe.hset(keys.SLAVE_STATS, mapping={s.name: 2000 + n, f"{s.name}:busy": 900.0 + n})
        pipe.hset(keys.slave_rate(s.name),
                  mapping={t // 5 - b: (b * n) % 9 for b in range(12)})
        for start in range(0, per_slave, 10_000):
            members = [keys.unit_member(running[i % len(running)], i)
                       for i in range(start, min(per_slave, start + 10_000))]
            pipe.rpush(keys.rq_queue_key(s.name), *(f"rqc-{m}" for m in members))
            pipe.sadd(keys.slave_units(s.name), *members)
        pipe.execute()
    ensure_group(conn)
    for i in range(50):
        pipe.xadd(keys.RESULTS_STREAM, {"job": running[0], "unit": i, "slave": "slave00"})
    for i in range(keys.EVENTS_MAXLEN):
        events.emit(pipe, events.JOB_DONE if i % 3 else events.SLAVE_JOINED, job=job_ids[i % JOBS],
                    slave=f"slave{i % SLAVES:02d}")
    pipe.execute()
    conn.xreadgroup(keys.COMBINERS_GROUP, "master@h:1", {keys.RESULTS_STREAM: ">"}, count=10)


def measure(conn: redis.Redis, config: ClusterConfig, frames: int, width: int
            ) -> dict[str, float]:
    snaps, draws = [], []
    trips = 0
    for _ in range(frames):
        t0 = time.perf_counter()
        snap = take_snapshot(conn, config)
        t1 = time.perf_counter()
        console = Console(width=width, height=50, file=io.StringIO(), force_terminal=True,
                          color_system="truecolor")
        console.print(render(snap, width, 50))
        t2 = time.perf_counter()
        snaps.append(t1 - t0)
        draws.append(t2 - t1)
        trips = snap.round_trips
    total = [a + b for a, b in zip(snaps, draws, strict=True)]
    return {"snapshot": statistics.median(snaps), "draw": statistics.median(draws),
            "frame": statistics.median(total),
            "frame_p95": sorted(total)[int(0.95 * (len(total) - 1))], "round_trips": trips}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--width", type=int, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rqc-watch-bench-") as tmp:
        broker = Broker(free_port(), Path(tmp))
        broker.start()
        try:
            conn = redis.Redis.from_url(broker.url)
            config = cluster_config(broker.url)
            print(f"{SLAVES} slaves, {JOBS} jobs (60 running), {args.frames} frames "
                  f"at {args.width} columns; median ms (p95 of the whole frame)")
            for queued in (1_000, 100_000):
                populate(conn, config, queued)
                held = sum(conn.llen(keys.rq_queue_key(s.name)) for s in config.slaves)
                m = measure(conn, config, args.frames, args.width)
                print(f"  {held:>7,} queued units: snapshot {1000 * m['snapshot']:5.1f}  "
                      f"draw {1000 * m['draw']:5.1f}  frame {1000 * m['frame']:5.1f} "
                      f"(p95 {1000 * m['frame_p95']:5.1f})  "
                      f"{m['round_trips']:.0f} round trips")
            conn.close()
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
