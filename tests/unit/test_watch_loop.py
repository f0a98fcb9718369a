"""The live loop: frames drawn in turn, a lost broker shown instead of raised."""

from __future__ import annotations

import io
from typing import Any

import pytest
import redis
from rich.console import Console

from rqcluster import watch
from rqcluster.config import ClusterConfig, Node, Slave
from rqcluster.snapshot import BrokerView, Snapshot, StreamView
from rqcluster.watch import footer, run_live


def empty(now: float = 1_800_000_000.0) -> Snapshot:
    return Snapshot(now=now, broker=BrokerView("redis://h:1/0"), roles=(), slaves=(),
                    jobs=(), stream=StreamView(), events=(), round_trips=1)


CONFIG = ClusterConfig(Node("m", "127.0.0.1"), Node("m", "127.0.0.1"),
                       (Slave("s1", "127.0.0.1", 1.0),))


def test_a_lost_broker_is_shown_and_the_next_frame_recovers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [redis.ConnectionError("Connection refused"), empty()]

    def fake_snapshot(conn: Any, config: Any, **kw: Any) -> Snapshot:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(watch, "take_snapshot", fake_snapshot)
    out = io.StringIO()
    console = Console(file=out, width=80, height=30, force_terminal=True, color_system=None)
    run_live(None, CONFIG, console, interval=0.1, stdin=io.StringIO(), frames=2)  # type: ignore[arg-type]
    text = out.getvalue()
    assert "lost Redis: Connection refused; retrying" in text
    assert "Slaves" in text and "q quit" in text
    assert "\x1b[?1049h" in text and text.rstrip().endswith("\x1b[?1049l")  # screen restored


def test_the_footer_says_how_to_quit_and_what_a_frame_cost() -> None:
    assert footer(empty(), 0.0123, 1.0) == "q quit · every 1 s · snapshot 12 ms, 1 round trip"
