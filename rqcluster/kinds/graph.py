"""``graph``: a multi-stage job, its units taking earlier units' results.

The units and their dependencies come from a ``rqcluster.graph.Graph`` (or a JSON job
file) and, while the job runs, from its scheduler's hooks (``rqcluster.scheduler``).
They are not split by master-assign like other kinds: its coordinator
(``rqcluster.coordinate``) adds them and places each once its prerequisites are done.

On a slave a unit runs its task on its prerequisites' results followed by its own
arguments, ``task(*results, *args)``. A task is a method of the job's node class (one
instance per slave and job), a function shipped with the job, or ``exec:PROGRAM``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from rqcluster.errors import InputError
from rqcluster.functions import describe, pack_function
from rqcluster.graph import Graph
from rqcluster.kinds.base import Function, Inputs, Items, Kind, Prepared, Unit


def task_input(task: str) -> str:
    """The job input holding a function task."""
    return f"task:{task}"


class GraphKind(Kind):
    name = "graph"
    help = "a multi-stage job: units that take earlier units' results, optional scheduler"
    coordinated = True

    def prepare(self, **params: Any) -> Prepared:
        self.check_params(params, ("graph",), ("scheduler", "seed", "description"))
        graph = params["graph"]
        if not isinstance(graph, Graph):
            raise InputError(f"graph: expected an rqcluster.graph.Graph, got "
                             f"{type(graph).__name__}")
        scheduler = params.get("scheduler")
        if not graph.units and scheduler is None:
            raise InputError("graph: the job has no units and no scheduler to start any")
        inputs: dict[str, Any] = {
            "units": Items([json.dumps({**u.to_spec(), "stage": u.stage},
                                       separators=(",", ":")).encode()
                            for u in graph.units])}
        tasks: dict[str, str] = {}
        if graph.node is not None:
            inputs["node"] = Function(pack_function(graph.node, "graph node"),
                                      describe(graph.node))
        for name, fn in graph.functions.items():
            inputs[task_input(name)] = Function(pack_function(fn, f"task {name}"), name)
            tasks[name] = "function"
        for unit in graph.units:
            tasks.setdefault(unit.task, "exec" if unit.task.startswith("exec:") else "node")
        out: dict[str, Any] = {"units": len(graph.units), "stages": list(graph.stages),
                               "tasks": tasks,
                               "node": describe(graph.node) if graph.node else None}
        if scheduler is not None:
            from rqcluster.scheduler import Scheduler
            if not (isinstance(scheduler, type) and issubclass(scheduler, Scheduler)):
                raise InputError("graph: scheduler must be a subclass of "
                                 "rqcluster.Scheduler")
            inputs["scheduler"] = Function(pack_function(scheduler, "graph scheduler"),
                                           describe(scheduler))
            out["scheduler"] = describe(scheduler)
        seed = params.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed < 2**63):
            raise InputError(f"graph: seed must be a whole number from 0 to 2**63-1, "
                             f"got {seed!r}")
        out["seed"] = secrets.randbits(63) if seed is None else seed
        if params.get("description"):
            out["description"] = str(params["description"])
        return Prepared(params=out, inputs=inputs)

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        raise RuntimeError("graph jobs are placed by the coordinator, not split")

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        task = spec["task"]
        results = inputs.results(spec.get("after", []))
        args = [*results, *spec.get("args", [])]
        if task.startswith("exec:"):
            return run_exec(task[5:], args)
        how = params["tasks"].get(task, "node")
        fn: Any
        if how == "function":
            fn = inputs.function(task_input(task))
        else:
            fn = getattr(inputs.instance("node"), task, None)
            if not callable(fn):
                raise InputError(f"graph: the node class {params.get('node')} has no "
                                 f"method {task!r}")
        return fn(*args)

    def combine(self, params: Mapping[str, Any], partials: list[Any], inputs: Inputs) -> Any:
        raise RuntimeError("graph jobs are finished by the coordinator, not combined")

    def describe(self, params: Mapping[str, Any]) -> str:
        text = params.get("description")
        if text:
            return str(text)
        stages = params.get("stages") or []
        what = f"graph of {params['units']:,} units in {len(stages)} stage" \
               f"{'' if len(stages) == 1 else 's'}"
        if stages:
            what += f" ({', '.join(stages[:4])}{', ...' if len(stages) > 4 else ''})"
        if params.get("scheduler"):
            what += f", scheduler {params['scheduler']}"
        return what


def run_exec(command: str, items: list[Any]) -> Any:
    """Run an ``exec:PROGRAM`` task on its inputs (one JSON line each); its result is the
    program's answers, or the one answer when it had one input."""
    raise InputError("graph: exec tasks need rqcluster.processor")
