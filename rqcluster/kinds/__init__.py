"""Job kind plug-ins, one module each; ``get_kind(name)`` finds one by its name."""

from __future__ import annotations

from rqcluster.errors import UnknownKindError
from rqcluster.kinds.base import Function, Inputs, Items, Kind, Prepared, Program, Unit
from rqcluster.kinds.calibrate import CalibrateKind
from rqcluster.kinds.graph import GraphKind
from rqcluster.kinds.map import MapKind
from rqcluster.kinds.matmul import MatmulKind
from rqcluster.kinds.montecarlo import MonteCarloKind

KINDS: dict[str, Kind] = {k.name: k for k in (MatmulKind(), MonteCarloKind(), MapKind(),
                                               GraphKind(), CalibrateKind())}


def get_kind(name: str) -> Kind:
    """The kind called ``name``; UnknownKindError listing the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKindError(f"unknown job kind {name!r} (known kinds: "
                               f"{', '.join(sorted(KINDS))})") from None


__all__ = ["KINDS", "Function", "Inputs", "Items", "Kind", "Prepared", "Program", "Unit",
           "get_kind"]
