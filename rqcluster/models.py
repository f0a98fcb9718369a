"""Wire records kept in Redis: the job record and the unit record.

Frozen dataclasses with ``encode``/``decode``; ``decode`` turns any malformed record into
a ``DecodeError``. Both carry room for what comes next: a job has stages (today one,
``main``) and a seed, a unit has an attempt count.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from rqcluster.errors import DecodeError

FORMAT = 1


class JobState(StrEnum):
    SUBMITTED = "submitted"   # written by enqueue, waiting for a master-assign
    RUNNING = "running"       # units placed on slave queues
    DONE = "done"             # result stored
    FAILED = "failed"         # a unit failed; ``error`` says which and why
    CANCELLED = "cancelled"   # cancelled by a user

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


def text(value: Any) -> str:
    """A Redis reply (bytes) or a str, as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class JobRecord:
    """The job as stored in its hash (``keys.job``)."""

    id: str
    kind: str
    state: JobState
    params: dict[str, Any]
    description: str
    submitted: float
    inputs: tuple[str, ...] = ()
    stages: tuple[str, ...] = ("main",)
    total: int | None = None
    remaining: int | None = None
    started: float | None = None
    finished: float | None = None
    error: dict[str, Any] | None = None
    waiting: str | None = None
    fetched: dict[str, int] = field(default_factory=dict)  # whole-input fetches by name
    retries: int = 0  # unit starts beyond each unit's first
    lost: int = 0  # unit runs lost with a worker that died
    moved: int = 0  # units moved off a slave that lost them
    killed: int = 0  # units of a graph job killed by its scheduler (done without running)
    seed: int | None = None  # the job seed (``rqcluster.seeding``); None: recorded before seeds
    stolen: int = 0  # queued units an idle slave took from a slower one
    drained: int = 0  # queued units moved off a slave being drained

    @property
    def done_units(self) -> int:
        if self.total is None or self.remaining is None:
            return 0
        return self.total - self.remaining

    def encode(self) -> dict[str, str]:
        """The fields to HSET; optional fields that are None are left out."""
        out = {"v": str(FORMAT), "id": self.id, "kind": self.kind, "state": self.state.value,
               "params": json.dumps(self.params), "description": self.description,
               "submitted": repr(self.submitted), "inputs": json.dumps(list(self.inputs)),
               "stages": json.dumps(list(self.stages))}
        for name in ("total", "remaining", "started", "finished"):
            value = getattr(self, name)
            if value is not None:
                out[name] = repr(value)
        if self.error is not None:
            out["error"] = json.dumps(self.error)
        if self.waiting is not None:
            out["waiting"] = self.waiting
        if self.seed is not None:
            out["seed"] = str(self.seed)
        return out

    @classmethod
    def decode(cls, raw: dict[Any, Any]) -> JobRecord:
        """A JobRecord from HGETALL's answer; DecodeError if it is not one."""
        try:
            f = {text(k): text(v) for k, v in raw.items()}
            if int(f.get("v", "0")) > FORMAT:
                raise ValueError(f"record format {f['v']} is newer than this rqcluster")
            def opt(name: str) -> float | None:
                return float(f[name]) if name in f else None

            total, remaining = opt("total"), opt("remaining")
            params, inputs, stages = (json.loads(f["params"]), json.loads(f["inputs"]),
                                      json.loads(f.get("stages", '["main"]')))
            if not isinstance(params, dict):
                raise ValueError("params is not a JSON object")
            for name, names in (("inputs", inputs), ("stages", stages)):
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError(f"{name} is not a list of names")
            return cls(
                id=f["id"], kind=f["kind"], state=JobState(f["state"]),
                params=params, description=f.get("description", ""),
                submitted=float(f["submitted"]), inputs=tuple(inputs), stages=tuple(stages),
                error=json.loads(f["error"]) if "error" in f else None,
                waiting=f.get("waiting"), started=opt("started"), finished=opt("finished"),
                fetched={k.removeprefix("fetched:"): int(v) for k, v in f.items()
                         if k.startswith("fetched:")},
                total=None if total is None else int(total),
                retries=int(f.get("retries", 0)), lost=int(f.get("lost", 0)),
                moved=int(f.get("moved", 0)), killed=int(f.get("killed", 0)),
                seed=int(f["seed"]) if "seed" in f else None,
                stolen=int(f.get("stolen", 0)), drained=int(f.get("drained", 0)),
                remaining=None if remaining is None else int(remaining))
        except (KeyError, ValueError, TypeError) as e:
            raise DecodeError(f"corrupt job record: {type(e).__name__}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["done"] = self.done_units
        return d


@dataclass(frozen=True)
class UnitRecord:
    """One unit as stored in the job's units hash (``keys.units``)."""

    index: int
    slave: str
    spec: dict[str, Any]
    stage: str = "main"
    attempts: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    sig: str = ""  # HMAC of spec and stage (``rqcluster.signedrq.sign_unit``)

    def encode(self) -> str:
        return json.dumps({"i": self.index, "s": self.slave, "spec": self.spec,
                           "stage": self.stage, "a": self.attempts, "m": self.meta,
                           "sig": self.sig}, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: bytes | str) -> UnitRecord:
        try:
            d = json.loads(raw)
            return cls(int(d["i"]), str(d["s"]), dict(d["spec"]), str(d.get("stage", "main")),
                       int(d.get("a", 0)), dict(d.get("m", {})), str(d.get("sig", "")))
        except (KeyError, ValueError, TypeError) as e:
            raise DecodeError(f"corrupt unit record: {type(e).__name__}: {e}") from e
