"""The cluster's event log: a capped Redis stream of things that happened.

Every node appends what an operator would want to know about (a slave joined or went
silent, a unit was moved off a dead slave, a job ended); the dashboard shows the latest.
The stream entry id carries the event's time (Redis's clock, so all nodes agree).
Appending is best-effort bookkeeping and never part of a job's correctness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from rqcluster import keys
from rqcluster.models import text

# Kinds of event, as written in the ``event`` field.
JOB_SUBMITTED = "job-submitted"
JOB_PLACED = "job-placed"
JOB_DONE = "job-done"
JOB_FAILED = "job-failed"
JOB_CANCELLED = "job-cancelled"
SLAVE_JOINED = "slave-joined"
SLAVE_LEFT = "slave-left"
SLAVE_SILENT = "slave-silent"
UNIT_MOVED = "unit-moved"
UNIT_RETRIED = "unit-retried"
RESULT_IGNORED = "result-ignored"


@dataclass(frozen=True)
class Event:
    """One entry of the event stream."""

    at: float  # unix time, from the entry id
    event: str
    fields: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "event": self.event, **self.fields}


def emit(conn: Any, event: str, **fields: Any) -> None:
    """Append an event (``conn`` may be a pipeline; then it is sent with the pipeline)."""
    entry = {"event": event, **{k: str(v) for k, v in fields.items() if v is not None}}
    conn.xadd(keys.EVENTS, entry, maxlen=keys.EVENTS_MAXLEN, approximate=True)


def recent(conn: redis.Redis, count: int = 12) -> list[Event]:
    """The latest ``count`` events, oldest first."""
    out = []
    entries: list[Any] = conn.xrevrange(keys.EVENTS, count=count) or []
    for entry_id, raw in reversed(entries):
        fields = {text(k): text(v) for k, v in (raw or {}).items()}
        out.append(Event(at=int(text(entry_id).split("-")[0]) / 1000,
                         event=fields.pop("event", "?"), fields=fields))
    return out
