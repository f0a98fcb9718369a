"""Reproducible randomness: the job seed, each unit's seed, and the running unit's context.

Every job has a seed, chosen at submit (given by the user, else random). Unit ``i`` of the
job draws from ``SeedSequence(job_seed, spawn_key=(i,))`` — the stream
``SeedSequence(job_seed).spawn(n)[i]`` would give, built directly — so what a unit draws
depends on the job seed and the unit's index only: never on which slave runs it, nor on
the attempt (a retried or moved unit starts again from the same state).

The slave sets the context around every ``kind.process`` call (``unit_context``), so user
code of any kind can ask for ``unit_rng()`` / ``unit_seed()`` (``rqcluster.unit_seed`` is
``current_seed`` here), and a kind can read
``current_unit()`` (e.g. to give an external program its ``RQCLUSTER_SEED``).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rqcluster.errors import InputError, NotInUnit

SEED_BITS = 63          # a random job seed fits a signed 64-bit integer in any language
MAX_SEED = 2**128 - 1   # a given seed may be as wide as SeedSequence's usual entropy


def new_seed() -> int:
    """A fresh random job seed (63 bits)."""
    return secrets.randbits(SEED_BITS)


def check_seed(value: Any, what: str = "seed") -> int:
    """``value`` as a job seed; InputError unless it is a whole number in [0, 2**128)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{what} must be a whole number, got {value!r}")
    if not 0 <= value <= MAX_SEED:
        raise InputError(f"{what} must be between 0 and 2**128 - 1, got {value}")
    return int(value)


def fallback_seed(job_id: str) -> int:
    """The seed of a job recorded before jobs had seeds: fixed by its id, so its units
    still draw the same numbers on every attempt."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") >> 1


def unit_seed_sequence(job_seed: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of unit ``index`` of a job (the one montecarlo has always used)."""
    return np.random.SeedSequence(job_seed, spawn_key=(index,))


def unit_seed(job_seed: int, index: int) -> int:
    """Unit ``index``'s seed as one 63-bit integer (for programs: ``RQCLUSTER_SEED``)."""
    state = unit_seed_sequence(job_seed, index).generate_state(1, np.uint64)
    return int(state[0]) >> (64 - SEED_BITS)


@dataclass
class UnitContext:
    """The unit this thread of a slave is running: its job, index and the job's seed."""

    job: str
    index: int
    job_seed: int
    _rng: np.random.Generator | None = field(default=None, repr=False)

    @property
    def seed(self) -> int:
        return unit_seed(self.job_seed, self.index)

    def rng(self) -> np.random.Generator:
        """The unit's generator: made fresh at the unit's start (each attempt), then the
        same object for the rest of the unit, so successive draws continue one stream."""
        if self._rng is None:
            self._rng = np.random.default_rng(unit_seed_sequence(self.job_seed, self.index))
        return self._rng


_current: ContextVar[UnitContext | None] = ContextVar("rqcluster_unit", default=None)


@contextlib.contextmanager
def unit_context(job_id: str, index: int, job_seed: int | None) -> Iterator[UnitContext]:
    """Run the body as unit ``index`` of ``job_id`` (``job_seed`` None: a job recorded
    before seeds existed); the previous context is back afterwards, whatever happens."""
    seed = fallback_seed(job_id) if job_seed is None else job_seed
    token = _current.set(UnitContext(job_id, index, seed))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def current_unit() -> UnitContext:
    """The unit being run; NotInUnit outside one."""
    ctx = _current.get()
    if ctx is None:
        raise NotInUnit("rqcluster.unit_rng() and unit_seed() work only inside a unit "
                        "running on the cluster (a map function, a stage, ...), not here; "
                        "to test locally, wrap the call in "
                        "rqcluster.seeding.unit_context(job_id, index, seed)")
    return ctx


def unit_rng() -> np.random.Generator:
    """The running unit's numpy Generator: the same numbers on every attempt, whichever
    slave runs it; successive calls in one unit return the same generator."""
    return current_unit().rng()


def current_seed() -> int:
    """The running unit's seed (a 63-bit int, as given to programs in RQCLUSTER_SEED)."""
    return current_unit().seed
