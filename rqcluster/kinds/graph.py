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
from collections.abc import Mapping
from typing import Any

from rqcluster import processor
from rqcluster.config import Options
from rqcluster.errors import InputError
from rqcluster.functions import describe, pack_function
from rqcluster.graph import Graph
from rqcluster.kinds.base import Function, Inputs, Items, Kind, Prepared, Program, Unit
from rqcluster.kinds.map import DEFAULT_TIMEOUT_SHARE


def task_input(task: str) -> str:
    """The job input holding a function task."""
    return f"task:{task}"


class GraphKind(Kind):
    name = "graph"
    help = "a multi-stage job: units that take earlier units' results, optional scheduler"
    coordinated = True

    def prepare(self, **params: Any) -> Prepared:
        self.check_params(params, ("graph",), ("scheduler", "description", "unit_timeout",
                                               "programs"))
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
        programs: dict[str, Any] = {}
        for task in [*(u.task for u in graph.units), *(params.get("programs") or ())]:
            if task.startswith("exec:") and task not in programs:
                programs[task] = _prepare_exec(task, len(programs), inputs)
            tasks.setdefault(task, "exec" if task.startswith("exec:") else "node")
        out: dict[str, Any] = {"units": len(graph.units), "stages": list(graph.stages),
                               "tasks": tasks, "programs": programs,
                               "node": describe(graph.node) if graph.node else None}
        if programs:
            out["exec_timeout"] = DEFAULT_TIMEOUT_SHARE * float(
                params.get("unit_timeout") or Options().unit_timeout)
        if scheduler is not None:
            from rqcluster.scheduler import Scheduler
            if not (isinstance(scheduler, type) and issubclass(scheduler, Scheduler)):
                raise InputError("graph: scheduler must be a subclass of "
                                 "rqcluster.Scheduler")
            inputs["scheduler"] = Function(pack_function(scheduler, "graph scheduler"),
                                           describe(scheduler))
            out["scheduler"] = describe(scheduler)
        if params.get("description"):
            out["description"] = str(params["description"])
        return Prepared(params=out, inputs=inputs)

    def defaults(self, options: Options) -> dict[str, Any]:
        return {"unit_timeout": options.unit_timeout}  # bounds an exec task's timeout

    def split(self, params: Mapping[str, Any], shares: Mapping[str, float],
              units_per_slave: int) -> list[Unit]:
        raise RuntimeError("graph jobs are placed by the coordinator, not split")

    def process(self, spec: Mapping[str, Any], params: Mapping[str, Any],
                inputs: Inputs) -> Any:
        task = spec["task"]
        results = inputs.results(spec.get("after", []))
        args = [*results, *spec.get("args", [])]
        if task.startswith("exec:"):
            program = params["programs"][task]
            answers = processor.run_unit_program(program["spec"], args, params["exec_timeout"],
                                                 lambda: inputs.program(program["input"]))
            return answers[0] if len(args) == 1 else answers
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
        parts = []
        if params["units"]:
            what = f"{params['units']:,} unit{'' if params['units'] == 1 else 's'} in " \
                   f"{len(stages)} stage" \
                   f"{'' if len(stages) == 1 else 's'}"
            if stages:
                what += f" ({', '.join(stages[:4])}{', ...' if len(stages) > 4 else ''})"
            parts.append(what)
        if params.get("scheduler"):
            parts.append(f"steered by {params['scheduler']}")
        return "graph " + ", ".join(parts)


def _prepare_exec(task: str, number: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """An ``exec:PROGRAM`` task checked at submit (``rqcluster.processor``); a program
    file is shipped, sealed, as an input of its own."""
    prepared = processor.prepare_program(task[5:], f"graph task {task!r}")
    name = f"{processor.PROGRAM_INPUT}:{number}"
    if prepared.script is not None:
        inputs[name] = Program(prepared.script, prepared.spec["name"])
    return {"spec": prepared.spec, "input": name}
