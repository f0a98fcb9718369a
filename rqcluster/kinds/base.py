"""The contract every job kind implements, and the values that pass through it.

A kind is a small class of pure functions that never touch Redis or the clock:

- ``prepare(**params) -> Prepared``: on the submitter; turns what the user gave (paths,
  arrays, functions) into JSON params plus named inputs, refusing bad input before
  anything is written.
- ``split(params, shares, units_per_slave) -> [Unit]``: on master-assign; ``shares`` maps
  each live slave to its performance.
- ``process(spec, params, inputs) -> partial``: on a slave, for one unit.
- ``combine(params, partials, inputs) -> result``: on master-combine, partials in unit order.

``inputs`` is an ``Inputs``: the slave's view of the job's stored inputs (arrays by row
range, items by index range, functions), so kinds never see Redis keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from rqcluster.config import Options
from rqcluster.errors import InputError


@dataclass(frozen=True)
class Items:
    """A list input: each item already encoded, as one JSON document (a .jsonl line) or as
    an ``rqcluster.codec`` value (Python lists: numpy arrays and scalars allowed)."""

    lines: list[bytes]
    format: str = "json"


@dataclass(frozen=True)
class Function:
    """A function input: cloudpickled bytes (shipped by value) and a name for messages."""

    blob: bytes
    name: str


@dataclass(frozen=True)
class Program:
    """A program file shipped with the job (a script or an executable): its bytes, sealed
    at submit like a function and verified on the slave before it is written and run."""

    blob: bytes
    name: str


InputValue = np.ndarray | Items | Function | Program


@dataclass(frozen=True)
class Prepared:
    """A validated job, ready to be written: JSON-able params and named inputs."""

    params: dict[str, Any]
    inputs: dict[str, InputValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Unit:
    """One unit of work: its index in the job, the slave it is placed on, and its spec."""

    index: int
    slave: str
    spec: dict[str, Any]


class Inputs(Protocol):
    """Read access to one job's inputs, by name."""

    def array(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray: ...

    def items(self, name: str, start: int, stop: int) -> list[Any]: ...

    def function(self, name: str) -> Callable[..., Any]: ...

    def instance(self, name: str) -> Any: ...

    def results(self, units: Sequence[int]) -> list[Any]: ...
    def program(self, name: str) -> bytes: ...


class Kind:
    """Base class of job kinds; subclasses override the four steps."""

    name: ClassVar[str]
    help: ClassVar[str]
    # True when the result is the partials (arrays) stacked along axis 0 in unit order.
    # The combiner then leaves the partials where the slaves wrote them and readers
    # assemble them block by block: the result's bytes never pass through the combiner,
    # and ``result -o`` streams them into the file. ``result_layout`` gives dtype and shape.
    stacked: ClassVar[bool] = False
    # True for a kind whose units master-assign's coordinator adds and places as they
    # become ready (``graph``) instead of ``split``; its jobs end without ``combine``.
    coordinated: ClassVar[bool] = False
    # True when the kind takes the job seed as its ``seed`` parameter (montecarlo): the
    # seed the user gives, or the random one chosen at submit, is passed to ``prepare``.
    seeded: ClassVar[bool] = False

    def prepare(self, **params: Any) -> Prepared:
        raise NotImplementedError

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        raise NotImplementedError

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        raise NotImplementedError

    def combine(self, params: Mapping[str, Any], partials: list[Any], inputs: Inputs) -> Any:
        raise NotImplementedError

    def result_layout(self, params: Mapping[str, Any]) -> tuple[np.dtype[Any], tuple[int, ...]]:
        """Dtype and shape of a stacked result (only for ``stacked`` kinds)."""
        raise NotImplementedError

    def defaults(self, options: Options) -> dict[str, Any]:
        """Parameters this kind takes from the cluster's options when the submitter does not
        give them (``enqueue.validate`` fills them in; e.g. matmul's ``memory_budget``)."""
        return {}

    def stack_groups(self, params: Mapping[str, Any], units: int) -> list[list[int]]:
        """For a stacked kind: the units that make each row block of the result, in row
        order, each group's partials side by side (default: one unit per row block)."""
        return [[i] for i in range(units)]

    def check_params(self, params: Mapping[str, Any], required: tuple[str, ...],
                     optional: tuple[str, ...] = ()) -> None:
        """InputError for an unknown parameter or a missing (or None) required one."""
        known = required + optional
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InputError(f"{self.name}: unknown parameter {unknown[0]!r} "
                             f"(takes {', '.join(known)})")
        missing = [p for p in required if params.get(p) is None]
        if missing:
            raise InputError(f"{self.name}: {missing[0]} is required "
                             f"(needs {', '.join(required)})")

    def describe(self, params: Mapping[str, Any]) -> str:
        """One line saying what the job computes, for status and logs."""
        return self.name
