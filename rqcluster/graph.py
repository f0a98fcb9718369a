"""Multi-stage jobs: units that take earlier units' results, in named stages.

A graph job is a list of units. Each unit runs one *task* (a function, a method of the
job's node class, or an external program) on its prerequisites' results followed by its
own arguments: ``task(*results, *args)``. A unit waits until every unit it names is done;
nothing else orders the units, so a later stage rolls in as soon as its first inputs are
ready. Units are grouped in stages (names for people and for ``after`` references).

Built in Python::

    g = Graph(node=MonteCarloNode)
    samples = g.stage("sample", "montecarlo", count=11)
    g.stage("merge", "merge", after=[samples])

or read from a JSON job file (``load_job_file``)::

    {"node": "mc:MonteCarloNode",
     "stages": [{"name": "sample", "task": "montecarlo", "count": 11},
                {"name": "merge", "task": "merge", "after": ["sample"]}]}

An ``after`` entry names a whole stage (``"sample"``: all its units' results, in order),
one unit of it (``"sample[3]"``), or the unit at the same position (``"sample[i]"``: unit
i of this stage takes unit i of that one, which makes a rolling pipeline).

Everything here is pure: no Redis, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rqcluster.errors import InputError

MAX_UNITS = 100_000
_REF = re.compile(r"^([A-Za-z_][\w.-]*)(?:\[(\d+|i)\])?$")
_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


@dataclass(frozen=True)
class UnitSpec:
    """One unit of a graph job, as its record's spec carries it."""

    task: str
    args: tuple[Any, ...] = ()
    after: tuple[int, ...] = ()
    stage: str = "main"

    def to_spec(self) -> dict[str, Any]:
        return {"task": self.task, "args": list(self.args), "after": list(self.after)}


@dataclass(frozen=True)
class StageRef:
    """A stage of a ``Graph`` being built, for ``after=``."""

    name: str
    units: tuple[int, ...]

    def __getitem__(self, i: int) -> int:
        return self.units[i]

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Any:
        return iter(self.units)


@dataclass
class Graph:
    """A multi-stage job being built: stages of units and the tasks they run.

    ``node`` is an optional class whose methods are tasks (one instance per slave and
    job); other tasks are functions given directly, or ``exec:PROGRAM`` strings (a
    program speaking rqcluster's JSON-lines protocol, ``docs/protocol.md``)."""

    node: type | None = None
    units: list[UnitSpec] = field(default_factory=list)
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    stages: dict[str, list[int]] = field(default_factory=dict)

    def stage(self, name: str, task: str | Callable[..., Any], count: int | None = None,
              args: Sequence[Sequence[Any]] | None = None,
              after: Iterable[StageRef | int | str] = ()) -> StageRef:
        """Add a stage: ``count`` units with no arguments (default 1, or as many as the
        stage it pairs with by ``"X[i]"``), or one unit per entry of ``args`` (each a list
        of positional arguments). Every unit takes the results named by ``after``: a
        StageRef (all its units), an int (that unit) or a string (as in job files)."""
        _check_name(name, "stage name")
        if name in self.stages:
            raise InputError(f"graph: stage {name!r} is defined twice")
        refs = list(after)
        if count is None and args is None:  # "X[i]" pairs this stage with X: as many units
            count = next((len(self.stages[m.group(1)]) for r in refs if isinstance(r, str)
                          and (m := _REF.match(r)) and m.group(2) == "i"
                          and m.group(1) in self.stages), None)
        argument_lists = _argument_lists(name, count, args)
        task_name = self.task(task)
        first = len(self.units)
        for position, unit_args in enumerate(argument_lists):
            prereqs = tuple(i for ref in refs for i in self._resolve(ref, name, position,
                                                                      len(argument_lists)))
            self._add(UnitSpec(task_name, tuple(unit_args), prereqs, name))
        indexes = tuple(range(first, len(self.units)))
        self.stages[name] = list(indexes)
        return StageRef(name, indexes)

    def unit(self, task: str | Callable[..., Any], *args: Any,
             after: Iterable[StageRef | int | str] = (), stage: str = "main") -> int:
        """Add one unit; returns its index (for ``after=``)."""
        _check_name(stage, "stage name")
        prereqs = tuple(i for ref in after for i in self._resolve(ref, stage, 0, 1))
        index = self._add(UnitSpec(self.task(task), args, prereqs, stage))
        self.stages.setdefault(stage, []).append(index)
        return index

    def task(self, task: str | Callable[..., Any]) -> str:
        """The name a unit uses for ``task``: a node method's name, ``exec:...`` as is,
        or a function's qualified name (the function is shipped with the job)."""
        if isinstance(task, str):
            if task.startswith("exec:"):
                if not task[5:].strip():
                    raise InputError("graph: exec: needs a program")
                return task
            if self.node is None or not callable(getattr(self.node, task, None)):
                where = f"node class {self.node.__name__}" if self.node else "no node class"
                raise InputError(f"graph: task {task!r} is not a method of {where}")
            return task
        if not callable(task):
            raise InputError(f"graph: a task must be a function, a node method name or "
                             f"'exec:PROGRAM', got {type(task).__name__}")
        name = f"{getattr(task, '__module__', '?')}:{getattr(task, '__qualname__', '?')}"
        known = self.functions.get(name)
        if known is not None and known is not task:
            raise InputError(f"graph: two different functions are both called {name}")
        self.functions[name] = task
        return name

    def _add(self, unit: UnitSpec) -> int:
        if len(self.units) >= MAX_UNITS:
            raise InputError(f"graph: more than {MAX_UNITS:,} units")
        self.units.append(unit)
        return len(self.units) - 1

    def _resolve(self, ref: StageRef | int | str, stage: str, position: int,
                 count: int) -> tuple[int, ...]:
        if isinstance(ref, StageRef):
            return ref.units
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(self.units):
                raise InputError(f"graph: stage {stage!r}: no unit {ref} to wait for")
            return (ref,)
        if not isinstance(ref, str):
            raise InputError(f"graph: stage {stage!r}: 'after' takes stage names, unit "
                             f"references or indexes, got {type(ref).__name__}")
        match = _REF.match(ref)
        if match is None or match.group(1) not in self.stages:
            known = ", ".join(self.stages) or "none yet"
            raise InputError(f"graph: stage {stage!r}: 'after' names {ref!r}, which is not "
                             f"an earlier stage (stages so far: {known})")
        units = self.stages[match.group(1)]
        which = match.group(2)
        if which is None:
            return tuple(units)
        if which == "i":
            if len(units) != count:
                raise InputError(f"graph: stage {stage!r} has {count} units but "
                                 f"{match.group(1)!r} has {len(units)}: '[i]' pairs them")
            return (units[position],)
        if int(which) >= len(units):
            raise InputError(f"graph: stage {stage!r}: {ref!r} is out of range "
                             f"({match.group(1)!r} has {len(units)} units)")
        return (units[int(which)],)


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"graph: {what} {name!r} must be letters, digits, '_', '.', '-'")


def _argument_lists(stage: str, count: Any, args: Any) -> list[list[Any]]:
    if count is not None and args is not None:
        raise InputError(f"graph: stage {stage!r}: give count or args, not both")
    if args is not None:
        if not isinstance(args, list | tuple) or not all(isinstance(a, list | tuple)
                                                         for a in args):
            raise InputError(f"graph: stage {stage!r}: args must be a list of argument "
                             "lists (one per unit)")
        out = [list(a) for a in args]
    else:
        if count is None:
            count = 1
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"graph: stage {stage!r}: count must be a whole number >= 1, "
                             f"got {count!r}")
        out = [[] for _ in range(count)]
    for unit_args in out:
        try:
            json.dumps(unit_args)
        except (TypeError, ValueError):
            raise InputError(f"graph: stage {stage!r}: unit arguments must be JSON values "
                             f"(numbers, strings, lists, dicts), got {unit_args!r:.80}") \
                from None
    return out


def sinks(afters: dict[int, Sequence[int]]) -> list[int]:
    """The units no other unit takes a result from, in index order (the job's result)."""
    taken = {p for prereqs in afters.values() for p in prereqs}
    return sorted(i for i in afters if i not in taken)


# -- job files ---------------------------------------------------------------------------

JOB_FILE_KEYS = {"node", "scheduler", "stages", "description", "seed", "programs"}
STAGE_KEYS = {"name", "task", "count", "args", "after"}


@dataclass(frozen=True)
class JobFile:
    """A graph job file, parsed: the graph and the references it names."""

    graph: Graph
    node: str | None
    scheduler: str | None
    seed: int | None
    description: str | None
    programs: tuple[str, ...] = ()  # exec: tasks only a scheduler starts


def load_job_file(path: str | Path,
                  import_ref: Callable[[str, str], Any]) -> JobFile:
    """Parse a JSON graph job file; ``import_ref("module:Name", what)`` imports the node,
    the scheduler and function tasks (relative to the file's folder, see the CLI)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"graph: job file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"graph: cannot read job file {path}: {e}") from None
    if not isinstance(raw, dict):
        raise InputError(f"graph: {path}: expected a JSON object")
    unknown = sorted(set(raw) - JOB_FILE_KEYS)
    if unknown:
        raise InputError(f"graph: {path}: unknown key {unknown[0]!r} "
                         f"(known: {', '.join(sorted(JOB_FILE_KEYS))})")
    node_ref = raw.get("node")
    node = import_ref(node_ref, "graph node") if node_ref else None
    if node is not None and not isinstance(node, type):
        raise InputError(f"graph: node {node_ref} must be a class")
    graph = Graph(node=node)
    stages = raw.get("stages", [])
    if not isinstance(stages, list) or (not stages and not raw.get("scheduler")):
        raise InputError(f"graph: {path}: 'stages' must be a non-empty list (or give a "
                         "scheduler)")
    for number, stage in enumerate(stages, 1):
        if not isinstance(stage, dict) or "name" not in stage or "task" not in stage:
            raise InputError(f"graph: {path}: stage {number} needs 'name' and 'task'")
        extra = sorted(set(stage) - STAGE_KEYS)
        if extra:
            raise InputError(f"graph: {path}: stage {stage['name']!r}: unknown key "
                             f"{extra[0]!r} (known: {', '.join(sorted(STAGE_KEYS))})")
        task = stage["task"]
        if not isinstance(task, str):
            raise InputError(f"graph: stage {stage['name']!r}: task must be a string")
        if ":" in task and not task.startswith("exec:"):
            task = import_ref(task, f"task of stage {stage['name']!r}")
        after = stage.get("after", [])
        if isinstance(after, str):
            after = [after]
        graph.stage(stage["name"], task, count=stage.get("count"), args=stage.get("args"),
                    after=after)
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or seed < 0):
        raise InputError(f"graph: {path}: seed must be a whole number >= 0")
    scheduler = raw.get("scheduler")
    for name, value in (("node", node_ref), ("scheduler", scheduler)):
        if value is not None and not isinstance(value, str):
            raise InputError(f"graph: {path}: {name} must be a 'module:Class' string")
    programs = raw.get("programs", [])
    if not isinstance(programs, list) or not all(isinstance(p, str) and p.startswith("exec:")
                                                 for p in programs):
        raise InputError(f"graph: {path}: 'programs' must be a list of 'exec:PROGRAM' strings")
    return JobFile(graph, node_ref, scheduler, seed, raw.get("description"), tuple(programs))
