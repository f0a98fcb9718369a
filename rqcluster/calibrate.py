"""`rqcluster calibrate`: measure every live slave with the same fixed unit, and write the
performance values it implies into the config file if asked.

Performance is relative to the slowest slave measured (1.0): a slave that runs the
benchmark unit in half the time gets 2.0. ``write_config`` changes only the
``performance`` of the slaves measured, keeps every other byte of meaning in the file
(keys, order, comments) and replaces the file atomically (a temporary file in the same
directory, then ``os.replace``), so a node reading it never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from rqcluster import enqueue, jobs, membership
from rqcluster.config import ClusterConfig, parse_config
from rqcluster.errors import ConfigError, NoLiveSlave
from rqcluster.secret import cluster_key

DECIMALS = 2


@dataclass(frozen=True)
class Calibration:
    seconds: dict[str, float]      # slave -> best seconds of the benchmark unit
    performance: dict[str, float]  # slave -> relative to the slowest (1.0)


def relative(seconds: Mapping[str, float]) -> dict[str, float]:
    """Performance relative to the slowest: slowest seconds / each slave's seconds."""
    if not seconds:
        return {}
    slowest = max(seconds.values())
    return {s: round(slowest / t, DECIMALS) for s, t in sorted(seconds.items())}


def run(conn: redis.Redis, config: ClusterConfig, timeout: float) -> Calibration:
    """Run the benchmark unit once on every live slave (one job of kind ``calibrate``)."""
    if not membership.live_shares(conn, config):
        raise NoLiveSlave("no live slave to calibrate (start them: rqcluster node --mode "
                          "slave --name NAME)")
    job_id = enqueue.write(conn, enqueue.validate("calibrate", config), cluster_key(config))
    record = jobs.wait(conn, job_id, timeout)
    jobs.raise_for_state(record)
    seconds = {str(k): float(v) for k, v in jobs.get_result(conn, job_id).items()}
    return Calibration(seconds, relative(seconds))


def write_config(path: Path, performance: Mapping[str, float]) -> list[str]:
    """Set ``performance`` of the named slaves in the config file at ``path``; returns
    the slaves written. The new document is validated before the file is replaced."""
    doc = json.loads(path.read_text())
    written = []
    for slave in doc.get("slaves", []):
        if isinstance(slave, dict) and slave.get("name") in performance:
            slave["performance"] = performance[slave["name"]]
            written.append(slave["name"])
    parse_config(doc, base_dir=path.resolve().parent, path=path.resolve())  # still valid
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write the config: {e.strerror}") from None
    return written
