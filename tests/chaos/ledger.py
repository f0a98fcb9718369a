"""Ground truth for the chaos tests: what happened to every unit of a job, from Redis.

Each count comes from a record written in the same atomic step as the effect it counts:
``attempts`` by the start script (one per run of a unit), the per-slave counts by the
completion script (one per *counted* completion). So after a job is done,
``effects == units`` proves nothing was lost (fewer) and nothing counted twice (more),
whatever was killed on the way.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

import redis

from rqcluster import events, keys


@dataclass
class JobLedger:
    job: str
    units: int
    runs: int  # unit starts, retries and moved copies included
    effects: int  # completions that counted

    @property
    def lost(self) -> int:
        return max(0, self.units - self.effects)

    @property
    def double_counted(self) -> int:
        return max(0, self.effects - self.units)


def ledger(conn: redis.Redis, job_id: str) -> JobLedger:
    record = conn.hgetall(keys.job(job_id))
    attempts = conn.hgetall(keys.attempts(job_id))
    runs = sum(int(v) for k, v in attempts.items() if k.decode().isdigit())
    effects = sum(int(v) for v in conn.hvals(keys.slave_counts(job_id)))
    return JobLedger(job_id, int(record[b"total"]), runs, effects)


@dataclass
class Tally:
    """Totals over the chaos session, printed at its end."""

    kills: int = 0
    jobs: list[JobLedger] = field(default_factory=list)

    def add(self, entry: JobLedger) -> JobLedger:
        self.jobs.append(entry)
        return entry

    def summary(self) -> str:
        units = sum(j.units for j in self.jobs)
        runs = sum(j.runs for j in self.jobs)
        lost = sum(j.lost for j in self.jobs)
        double = sum(j.double_counted for j in self.jobs)
        return (f"chaos: {len(self.jobs)} jobs, {units} units, {runs} unit runs, "
                f"{self.kills} kills survived, {lost} units lost, {double} double-counted")


TALLY = Tally()


def kill_group(proc: subprocess.Popen[Any], sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal a node's whole process group (the node and the worker it runs)."""
    os.killpg(proc.pid, sig)
    if sig == signal.SIGKILL:
        TALLY.kills += 1
        proc.wait(timeout=10)


def event_log(conn: redis.Redis, job_id: str | None = None) -> list[events.Event]:
    return [e for e in events.recent(conn, keys.EVENTS_MAXLEN)
            if job_id is None or e.fields.get("job") == job_id]
