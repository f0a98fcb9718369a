"""Observed performance: how fast each slave really works, measured from finished jobs.

The measure, per finished job (``job_observation``): the units of one job are cut to
equal cost (every kind splits that way), so a slave's units per busy second *within one
job* is its speed normalised by unit cost. Each slave that completed at least
``MIN_UNITS`` units of the job gets the sample

    sample(s) = rate(s) * sum(used(m)) / sum(rate(m))     over the measured slaves m

where ``rate(s) = units(s) / busy_seconds(s)`` and ``used`` is the performance each slave
had when the sample is taken. Scaling by the sum keeps the samples on the configured
scale: the measured slaves' performances add up to what they added up to before, only
redistributed by measured speed (so "configured 1, observed 0.25" reads at a glance). A
job needs two measured slaves; one alone says nothing about relative speed.

Samples are smoothed across jobs by an exponentially weighted mean
(``smooth``: new = ALPHA * sample + (1 - ALPHA) * old, ALPHA = 0.5), so one noisy job
moves a slave half-way and a slave that really changed speed is tracked within a few
jobs. The result lives in Redis (``keys.OBSERVED``); `watch` and `status` show it beside
the configured value, and placement uses it for a slave whose config says
``"performance": "auto"``, or for every slave when ``options.adaptive`` is true.

Busy seconds per slave and job come from the completion script (``busy:{slave}`` in the
job record). Master-assign looks at the newest jobs once per pass and observes each
finished one once (``observed`` in the job record, set with HSETNX).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import redis

from rqcluster import keys
from rqcluster.config import ClusterConfig, Slave
from rqcluster.models import text

log = logging.getLogger("rqcluster.adaptive")

ALPHA = 0.5        # weight of the newest job in the smoothed value
MIN_UNITS = 2      # units of a job a slave must complete to be measured by it
NEWEST_JOBS = 10   # jobs master-assign looks at per pass for unobserved finished ones


# --- pure decisions ---------------------------------------------------------------------

def job_observation(done: Mapping[str, int], busy: Mapping[str, float],
                    used: Mapping[str, float], min_units: int = MIN_UNITS
                    ) -> dict[str, float]:
    """Each measured slave's sample of one job (see the module docstring); empty if fewer
    than two slaves are measured. ``used`` must name every slave in ``done``."""
    rates = {s: n / busy[s] for s, n in done.items()
             if n >= min_units and busy.get(s, 0.0) > 0 and used.get(s, 0.0) > 0}
    if len(rates) < 2:
        return {}
    scale = sum(used[s] for s in rates) / sum(rates.values())
    return {s: r * scale for s, r in rates.items()}


def smooth(previous: float | None, sample: float, alpha: float = ALPHA) -> float:
    """The exponentially weighted mean after one more sample (the sample alone at first)."""
    return sample if previous is None else alpha * sample + (1 - alpha) * previous


def effective_performance(slave: Slave, observed: float | None, adaptive: bool) -> float:
    """The performance that sizes a slave's share of the next job: its observed one when
    its config says "auto" (or the cluster is adaptive) and it has been measured, else the
    configured (or joined-with) one."""
    if observed is not None and observed > 0 and (slave.auto or adaptive):
        return observed
    return slave.performance


# --- Redis -------------------------------------------------------------------------------

def read_observed(conn: redis.Redis) -> dict[str, float]:
    """slave -> observed performance, for every slave measured so far."""
    return decode_observed(conn.hgetall(keys.OBSERVED))


def decode_observed(raw: Mapping[Any, Any] | None) -> dict[str, float]:
    out = {}
    for name, value in (raw or {}).items():
        try:
            out[text(name)] = float(json.loads(value)["performance"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def job_sample_inputs(fields: Mapping[Any, Any], counts: Mapping[Any, Any]
                      ) -> tuple[dict[str, int], dict[str, float]]:
    """(units done, busy seconds) per slave from a job's record and per-slave counts."""
    busy = {}
    for k, v in fields.items():
        name = text(k)
        if name.startswith("busy:"):
            try:
                busy[name[len("busy:"):]] = float(v)
            except ValueError:
                continue
    done = {}
    for k, v in counts.items():
        try:
            done[text(k)] = int(v)
        except ValueError:
            continue
    return done, busy


class Observer:
    """Master-assign's side: fold each newly finished job into the observed values."""

    def __init__(self, conn: redis.Redis, config: ClusterConfig) -> None:
        self.conn = conn
        self.config = config

    def step(self, slaves: Mapping[str, Slave]) -> list[str]:
        """Observe the newest finished jobs not observed yet; ``slaves`` are the cluster's
        slaves now (config and joined). Returns the ids of the jobs observed."""
        ids = [text(j) for j in self.conn.zrevrange(keys.JOBS_INDEX, 0, NEWEST_JOBS - 1)]
        if not ids:
            return []
        pipe = self.conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), "state", "observed", "graph")
        # (a graph job's units run different tasks: their costs are not comparable)
        fresh = [job_id for job_id, (state, seen, graph)
                 in zip(ids, pipe.execute(), strict=True)
                 if state == b"done" and seen is None and graph is None]
        observed = []
        for job_id in fresh:
            if self.conn.hsetnx(keys.job(job_id), "observed", "1"):  # once, whoever sees it
                self._observe(job_id, slaves)
                observed.append(job_id)
        return observed

    def _observe(self, job_id: str, slaves: Mapping[str, Slave]) -> None:
        pipe = self.conn.pipeline(transaction=False)
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.slave_counts(job_id))
        pipe.hgetall(keys.OBSERVED)
        fields, counts, raw = pipe.execute()
        done, busy = job_sample_inputs(fields, counts)
        before = decode_observed(raw)
        used = {s: effective_performance(slaves[s], before.get(s), self.config.options.adaptive)
                for s in done if s in slaves}
        samples = job_observation({s: n for s, n in done.items() if s in used}, busy, used)
        if not samples:
            return
        now = time.time()
        updates: dict[str, str] = {}
        for s, sample in samples.items():
            old = _record(raw, s)
            value = smooth(before.get(s), sample)
            updates[s] = json.dumps({"performance": round(value, 4), "sample": round(sample, 4),
                                     "jobs": int(old.get("jobs", 0)) + 1, "job": job_id,
                                     "at": now})
        self.conn.hset(keys.OBSERVED, mapping=updates)  # type: ignore[arg-type]
        log.info("job %s: observed performance %s", job_id,
                 ", ".join(f"{s} {json.loads(v)['performance']:g}" for s, v in updates.items()))


def _record(raw: Mapping[Any, Any], slave: str) -> dict[str, Any]:
    value = raw.get(slave.encode()) if raw else None
    try:
        return dict(json.loads(value)) if value else {}
    except (ValueError, TypeError):
        return {}
