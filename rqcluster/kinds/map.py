"""``map``: apply a user function to every item of an input, then reduce.

Input: a list of JSON values (``.jsonl`` lines), the rows of an array (a ``.npy``, items
along axis 0), or a range of integers. Items are batched into units (several per slave,
never one unit per item). Each unit applies the function and reduces its own batch; the
combiner reduces the unit partials in unit order, so ``list`` keeps input order and a
user reduce sees a deterministic order.

Reduce: ``sum`` (``+``), ``list`` (results in input order), or a function of two
arguments (like ``functools.reduce``).

Instead of a function, a program in any language (``program=``, ``--exec``): run once per
unit over its items by the JSON-lines protocol of ``rqcluster.processor``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rqcluster import codec, placement, processor
from rqcluster.config import Options
from rqcluster.errors import InputError
from rqcluster.functions import describe, import_function, pack_function
from rqcluster.kinds.base import Function, Inputs, Items, Kind, Prepared, Program, Unit
from rqcluster.npyfile import load_npy

REDUCERS = ("sum", "list")
DEFAULT_TIMEOUT_SHARE = 0.9  # of the unit timeout: a program's default timeout
_EMPTY = {"n": 0}


class MapKind(Kind):
    name = "map"
    help = "apply a Python function or a program to every item of an input and reduce"

    def prepare(self, **params: Any) -> Prepared:
        self.check_params(params, ("items",),
                          ("function", "program", "reduce", "timeout", "unit_timeout"))
        fn: Any = params.get("function")
        program = params.get("program")
        if (fn is None) == (program is None):
            raise InputError("map: give a function or a program (--exec PROGRAM), not both"
                             if fn is not None else
                             "map: function is required (or a program: --exec PROGRAM)")
        inputs: dict[str, Any] = {}
        if program is not None:
            out = _prepare_program(program, params, inputs)
        else:
            if params.get("timeout") is not None:
                raise InputError("map: timeout applies to a program (--exec) only")
            if isinstance(fn, str):
                fn = import_function(fn, "map function")
            inputs["function"] = Function(pack_function(fn, "map function"), describe(fn))
            out = {"function": describe(fn)}
        out.update(_prepare_items(params["items"], inputs))
        reduce = params.get("reduce") or "list"
        if isinstance(reduce, str) and reduce in REDUCERS:
            out["reduce"] = reduce
        else:
            rfn = import_function(reduce, "map reduce") if isinstance(reduce, str) else reduce
            inputs["reduce"] = Function(pack_function(rfn, "map reduce"), describe(rfn))
            out["reduce"] = "function"
            out["reduce_function"] = describe(rfn)
        return Prepared(params=out, inputs=inputs)

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        n = placement.unit_count(params["count"], shares, units_per_slave)
        owners = placement.deal(n, shares)
        return [Unit(i, owners[i], {"items": [lo, hi]})
                for i, (lo, hi) in enumerate(placement.bounds(params["count"], n))]

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        lo, hi = spec["items"]
        if "program" in params:
            values = _run_program(params, inputs, list(_items(params, inputs, lo, hi)))
            return _reduce_unit(params, inputs, values)
        fn = inputs.function("function")
        values = []
        for offset, item in enumerate(_items(params, inputs, lo, hi)):
            try:
                values.append(fn(item))
            except Exception as e:
                e.add_note(f"(rqcluster: while applying {params['function']} to item "
                           f"{lo + offset} of the input)")
                raise
        return _reduce_unit(params, inputs, values)

    def combine(self, params: Mapping[str, Any], partials: list[Any], inputs: Inputs) -> Any:
        if params["reduce"] == "list":
            return [v for part in partials for v in part]
        values = [p["v"] for p in partials if p["n"]]
        if not values:
            if params["reduce"] == "sum":
                return 0
            raise InputError("map: cannot reduce an empty input with a reduce function")
        return _fold(_reducer(params, inputs), values)

    def describe(self, params: Mapping[str, Any]) -> str:
        what = params["function"] if "function" in params else \
            "program " + " ".join(params["program"]["argv"])
        return f"map {what} over {params['count']:,} items, " \
               f"reduce {params.get('reduce_function', params['reduce'])}"

    def defaults(self, options: Options) -> dict[str, Any]:
        return {"unit_timeout": options.unit_timeout}  # bounds a program's timeout


def _reduce_unit(params: Mapping[str, Any], inputs: Inputs, values: list[Any]) -> Any:
    """One unit's partial: its values (``list``), or their count and reduction."""
    if params["reduce"] == "list":
        return values
    if not values:
        return _EMPTY
    return {"n": len(values), "v": _fold(_reducer(params, inputs), values)}


def _prepare_program(program: Any, params: Mapping[str, Any],
                     inputs: dict[str, Any]) -> dict[str, Any]:
    """The params of a program map (and its file as an input, if shipped). Its timeout is
    the one given, else most of the cluster's unit timeout, so that the program is
    stopped, with its stderr in the error, before RQ stops the whole unit."""
    prepared = processor.prepare_program(program, "map: program")
    unit_timeout = params.get("unit_timeout") or Options().unit_timeout
    timeout = params.get("timeout")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_SHARE * unit_timeout
    elif isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= unit_timeout:
        raise InputError(f"map: timeout must be a number of seconds in (0, {unit_timeout:g}] "
                         f"(the cluster's unit-timeout), got {timeout!r}")
    if prepared.script is not None:
        inputs[processor.PROGRAM_INPUT] = Program(prepared.script, prepared.spec["name"])
    return {"program": prepared.spec, "timeout": float(timeout)}


def _run_program(params: Mapping[str, Any], inputs: Inputs, items: list[Any]) -> list[Any]:
    """Run the job's program over one unit's items (``rqcluster.processor``)."""
    return processor.run_unit_program(params["program"], items, params["timeout"],
                                      lambda: inputs.program(processor.PROGRAM_INPUT))


def _reducer(params: Mapping[str, Any], inputs: Inputs) -> Callable[[Any, Any], Any]:
    if params["reduce"] == "sum":
        return lambda a, b: a + b
    return inputs.function("reduce")


def _fold(fn: Callable[[Any, Any], Any], values: list[Any]) -> Any:
    acc = values[0]
    for v in values[1:]:
        acc = fn(acc, v)
    return acc


def _items(params: Mapping[str, Any], inputs: Inputs, lo: int, hi: int) -> Iterable[Any]:
    source = params["source"]
    if source == "range":
        start, _, step = params["range"]
        return range(start + lo * step, start + hi * step, step)
    if source == "array":
        return list(inputs.array("items", rows=(lo, hi)))
    return inputs.items("items", lo, hi)


def _prepare_items(items: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Turn the user's items into stored inputs; return the params that describe them."""
    if isinstance(items, range):
        return {"source": "range", "range": [items.start, items.stop, items.step],
                "count": len(items)}
    if isinstance(items, str | os.PathLike):
        path = Path(items)
        if path.suffix == ".npy":
            items = load_npy(path, "map input")
        elif path.suffix in (".jsonl", ".ndjson", ".json"):
            return _store_lines(read_jsonl(path), inputs)
        else:
            raise InputError(f"map input: {path} must be a .jsonl (one JSON value per line) "
                             "or a .npy file")
    if isinstance(items, np.ndarray):
        if items.ndim == 0:
            raise InputError("map input: a 0-d array has no items; give at least 1-D")
        from rqcluster.codec import check_numeric_dtype
        check_numeric_dtype(items.dtype, "map input")
        inputs["items"] = items
        return {"source": "array", "count": int(items.shape[0])}
    try:
        values = list(items)
    except TypeError:
        raise InputError(f"map input: expected a list, range, array or file path, got "
                         f"{type(items).__name__}") from None
    lines = [codec.encode(v, f"map input: item {i}") for i, v in enumerate(values)]
    return _store_lines(lines, inputs, "codec")


def _store_lines(lines: list[bytes], inputs: dict[str, Any], fmt: str = "json"
                 ) -> dict[str, Any]:
    inputs["items"] = Items(lines, fmt)
    return {"source": "items", "count": len(lines)}


def read_jsonl(path: Path) -> list[bytes]:
    """The non-blank lines of a JSON-lines file, each checked to be one JSON value."""
    if not path.exists():
        raise InputError(f"map input: file not found: {path}")
    lines = []
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    json.loads(line)
                except ValueError as e:
                    raise InputError(f"map input: {path}:{number}: not valid JSON: "
                                     f"{e}") from None
                lines.append(line)
    except OSError as e:
        raise InputError(f"map input: cannot read {path}: {e.strerror}") from None
    return lines
