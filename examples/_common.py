"""What every example shares: the cluster from ``-c PATH`` (or $RQCLUSTER_CONFIG), and
how a finished graph job is reported (its result and how many units ran)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rqcluster import Cluster, JobHandle, RQClusterError


def arguments(description: str, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", default=os.environ.get("RQCLUSTER_CONFIG"),
                        help="cluster config (default: $RQCLUSTER_CONFIG, then "
                             "config/local.json)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait")
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default,
                            help=text)
    return parser.parse_args()


def cluster(args: argparse.Namespace) -> Cluster:
    try:
        return Cluster.from_config(args.config)
    except RQClusterError as e:
        sys.exit(f"error: {e}")


def report(job: JobHandle, result: Any, what: str) -> None:
    record = job.status().record
    ran = (record.total or 0) - record.killed
    print(f"{what}: {result}")
    print(f"units: {ran} ran, {record.killed} killed, {record.total} started "
          f"(job {job.id})")
