"""The RQ worker class a slave runs: RQ's SimpleWorker plus rqcluster's heartbeat.

SimpleWorker runs units in the worker process itself: RQ's forking Worker re-imports
numpy for every job (4x slower per unit) and would lose the per-job input cache. Units
are RQ jobs serialized as JSON (job id and unit index only; data stays in rqcluster's
own keys), so this worker never unpickles RQ job data. That JSON is signed, and the
job class runs nothing but a validly signed ``run_unit`` (``rqcluster.signedrq``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy  # noqa: F401 - imported once here, not once per unit
import redis
from rq.command import parse_payload
from rq.worker import SimpleWorker

from rqcluster import events, execute, keys, liveness, membership
from rqcluster.config import load_config
from rqcluster.connection import connect
from rqcluster.errors import RQClusterError
from rqcluster.safety import refuse_unsafe
from rqcluster.secret import cluster_key
from rqcluster.signedrq import SignedSerializer, UnitJob

log = logging.getLogger("rqcluster.slave")
DRAIN_CHECK = 0.5  # seconds between two looks at whether a draining slave is done


class SlaveWorker(SimpleWorker):
    """An rq worker for one rqcluster slave, heartbeating while it lives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = SignedSerializer
        kwargs["job_class"] = UnitJob
        super().__init__(*args, **kwargs)
        for queue in self.queues:  # `rq worker` made these with RQ's defaults
            queue.job_class, queue.serializer = UnitJob, SignedSerializer
        self.cluster = load_config(os.environ.get("RQCLUSTER_CONFIG"))
        try:  # no secret or an unsafe Redis: refuse now with one line, not at the first unit
            cluster_key(self.cluster)
            refuse_unsafe(self.connection, self.cluster.redis, warn=log.warning)
        except RQClusterError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        self.slave = membership.worker_slave(self.cluster, os.environ.get("RQCLUSTER_NODE"))
        self.status = liveness.WorkerStatus(self.slave, self.name)
        execute.configure(self.cluster.options, self.status,
                          connect(self.cluster.redis, check=False, patient=True))
        self._stop_beating = threading.Event()
        self._leaving = False
        execute.install_stop_handler()

    def handle_payload(self, message: Any) -> None:
        """RQ's command channel. ``stop-job`` names a unit ("job:unit") this worker may
        be running: its user code is interrupted (``execute.stop_unit``). RQ's own
        handling would kill the "work horse", which for a SimpleWorker is the worker's
        whole process group; ``kill-horse`` is refused for the same reason."""
        payload = parse_payload(message)
        command = payload.get("command")
        if command == "stop-job":
            if execute.stop_unit(str(payload.get("job_id"))):
                log.info("stopping unit %s", payload.get("job_id"))
        elif command == "kill-horse":
            log.warning("ignoring kill-horse: this worker runs units in its own process")
        else:
            super().handle_payload(message)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        beater = threading.Thread(target=self._beat, name="rqcluster-heartbeat", daemon=True)
        beater.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self._stop_beating.set()
            beater.join(timeout=2)
            try:
                liveness.worker_gone(self.connection, self.status)
                events.emit(self.connection, events.SLAVE_LEFT, slave=self.slave,
                            worker=self.name)
            except redis.RedisError:
                pass

    def _beat(self) -> None:
        """Refresh the heartbeats every third of their TTL, on a connection of its own, and
        look every DRAIN_CHECK seconds whether a drain of this slave is complete."""
        ttl = self.cluster.options.heartbeat_ttl
        conn = connect(self.cluster.redis, check=False)
        next_beat = 0.0
        while not self._stop_beating.is_set():
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + ttl / 3
                    if liveness.worker_beat(conn, self.status, ttl):
                        events.emit(conn, events.SLAVE_JOINED, slave=self.slave,
                                    worker=self.name)
                if not self._leaving and self._drained(conn):
                    self._leaving = True  # beats go on until the worker has stopped
            except redis.RedisError as e:
                log.warning("heartbeat failed: %s", e)
            self._stop_beating.wait(min(ttl / 3, DRAIN_CHECK))

    def _drained(self, conn: redis.Redis) -> bool:
        """A slave being drained that holds nothing any more stops: a warm shutdown (RQ
        finishes the RQ job in hand, whose units have all moved or finished), after
        which its node exits 0 and does not restart it."""
        pipe = conn.pipeline(transaction=False)
        pipe.sismember(keys.DRAINING, self.slave)
        pipe.scard(keys.slave_units(self.slave))
        leaving, held = pipe.execute()
        if not leaving or held:
            return False
        log.warning("slave %s drained: stopping", self.slave)
        os.kill(os.getpid(), signal.SIGTERM)
        return True
