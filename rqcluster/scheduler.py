"""The user's scheduler: event hooks that steer a graph job while it runs.

Subclass ``Scheduler`` and override the hooks you need::

    class MonteCarloScheduler(Scheduler):
        def init(self, seed):
            samples = [self.start_unit("montecarlo") for _ in range(11)]
            self.final = self.start_unit("merge", after=samples)

        def unit_done(self, unit, value):
            if unit == self.final:
                self.finish(value)

The hooks run on the master-assign node, one event at a time per job. Inside a hook
the scheduler may start units (``start_unit``, or the TaskSprint spelling ``start_task``),
kill units (``kill``: queued ones never run, running ones are stopped) and finish the
job early with a value (``finish``). What a hook asks for takes effect when it returns,
together with the scheduler's new state (the object is pickled and saved with the
event's effects, in one transaction): a master-assign that dies mid-hook leaves
nothing half-done, and its successor handles the event again from the saved state.
So keep hooks deterministic and keep the job's state on ``self``; side effects outside
the cluster (printing) may happen twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rqcluster.errors import InputError

_UNSET: Any = object()


@dataclass
class Actions:
    """What one hook call asked for (not part of the scheduler's saved state)."""

    started: list[tuple[int, str, tuple[Any, ...], tuple[int, ...], str]] = \
        field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    finished: bool = False
    value: Any = None


class Scheduler:
    """Base class of graph-job schedulers; every hook is optional."""

    job_id: str = ""
    seed: int = 0
    # the next unit index to give out; saved with the state, so it survives restarts
    next_unit: int = 0

    def init(self, seed: int) -> None:
        """The job starts (after its static stages, if any, are added)."""

    def slave_joined(self, name: str) -> None:
        """A slave became live while the job runs."""

    def slave_died(self, name: str) -> None:
        """A slave went silent while the job runs (its units are moved for you)."""

    def unit_done(self, unit: int, value: Any) -> None:
        """Unit ``unit`` completed with ``value`` (its task's return value)."""

    # -- what hooks may do ----------------------------------------------------------------

    def start_unit(self, task: str, *args: Any, after: Iterable[int] = (),
                   stage: str = "main") -> int:
        """Start a unit running ``task`` (a node method name, a function task of the job,
        or ``exec:PROGRAM``) on the results of the units in ``after`` (it waits for
        them) followed by ``args``; returns its unit index."""
        if not isinstance(task, str):
            raise InputError("start_unit: task must be a name (str): a node method, a "
                             "function task shipped with the job, or 'exec:PROGRAM'")
        prereqs = tuple(int(u) for u in after)
        index = self.next_unit
        self.next_unit += 1
        self._actions().started.append((index, task, tuple(args), prereqs, stage))
        return index

    def start_task(self, name: str, args: Iterable[Any] = (), pretasks: Iterable[int] = (),
                   stage: str | None = None) -> int:
        """TaskSprint's spelling of ``start_unit``: ``start_task(name=..., pretasks=[...])``."""
        return self.start_unit(name, *args, after=pretasks, stage=stage or name)

    def kill(self, *units: int) -> None:
        """Kill units: a queued one never runs, a running one is stopped; each counts as
        done with the value None, and units waiting for it are released."""
        self._actions().killed.extend(int(u) for u in units)

    def finish(self, value: Any = _UNSET) -> None:
        """End the job now, done, with ``value`` as its result (default: the results of
        the units no other unit takes, as when the job ends by itself). Units still
        queued or running are dropped."""
        actions = self._actions()
        actions.finished = True
        actions.value = value

    # -- the coordinator's side ------------------------------------------------------------

    def _actions(self) -> Actions:
        actions: Actions | None = self.__dict__.get("_rqcluster_actions")
        if actions is None:
            raise RuntimeError("scheduler actions are only possible inside a hook")
        return actions

    def _begin(self) -> None:
        self.__dict__["_rqcluster_actions"] = Actions()

    def _end(self) -> Actions:
        return self.__dict__.pop("_rqcluster_actions", None) or Actions()


def is_unset(value: Any) -> bool:
    return value is _UNSET
