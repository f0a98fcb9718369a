"""Reading a Redis stream as one consumer of a consumer group: what master-combine (the
results stream) and master-assign's coordinator (the schedule stream) share.

A consumer reads new entries (``XREADGROUP >``) and, now and then, takes over entries
another consumer of its group read but never acknowledged (it died): ``XAUTOCLAIM`` of
entries idle longer than ``claim_idle_ms``. Each loop acknowledges what it handled in its
own atomic step.
"""

from __future__ import annotations

import time
from typing import Any

import redis

Entry = tuple[bytes, dict[bytes, bytes]]


def ensure_group(conn: redis.Redis, stream: str, group: str) -> None:
    """Create the group (and the stream) unless they exist; from the start of the stream,
    so entries written before any consumer started are not skipped."""
    try:
        conn.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


class GroupReader:
    """One consumer's reads of one stream in one group."""

    def __init__(self, conn: redis.Redis, stream: str, group: str, consumer: str,
                 claim_idle_ms: int, count: int) -> None:
        self.conn, self.stream, self.group, self.consumer = conn, stream, group, consumer
        self.claim_idle_ms = claim_idle_ms
        self.count = count
        self._last_claim = 0.0

    def take(self, block_ms: int) -> list[Entry]:
        """Stale entries taken over (if it is time to look), then new ones (waiting up to
        ``block_ms`` for some)."""
        return self.claim_stale() + self.read(block_ms)

    def read(self, block_ms: int) -> list[Entry]:
        reply: Any = self.conn.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                          count=self.count, block=block_ms)
        return [(eid, fields) for _, items in reply or [] for eid, fields in items]

    def claim_stale(self) -> list[Entry]:
        """Entries another consumer read but never acknowledged, idle for
        ``claim_idle_ms``; looked for at most every third of that."""
        now = time.monotonic()
        if now - self._last_claim < self.claim_idle_ms / 3000:
            return []
        self._last_claim = now
        reply = self.conn.xautoclaim(self.stream, self.group, self.consumer,
                                     self.claim_idle_ms, start_id="0", count=self.count)
        gone = [eid for eid, fields in reply[1] if eid is not None and not fields]
        if gone:  # deleted while pending (Redis 6.2 keeps such ids in the PEL)
            self.conn.xack(self.stream, self.group, *gone)
        return [(eid, fields) for eid, fields in reply[1] if fields]
