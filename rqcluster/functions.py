"""Shipping user functions to slaves by value, with cloudpickle.

A slave has none of the user's code installed, so a function from the user's own module
is pickled together with that module's code (``register_pickle_by_value``); functions from
installed packages (numpy, the standard library, …) travel by reference as usual.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from rqcluster.errors import InputError

# Present on every node, so always pickled by reference.
_OURS = frozenset({"rqcluster", "workers"})
_INSTALLED = {Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
              if (p := sysconfig.get_paths().get(key))}


def import_function(ref: str, what: str = "function") -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (the current directory is importable, like ``python -m``)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"{what}: expected MODULE:FUNCTION, got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise InputError(f"{what}: cannot import module {module_name!r}: "
                         f"{type(e).__name__}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InputError(f"{what}: module {module_name!r} has no attribute "
                             f"{attr!r}") from None
    if not callable(obj):
        raise InputError(f"{what}: {ref} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _is_installed(module: ModuleType) -> bool:
    path = getattr(module, "__file__", None)
    if path is None:
        return True  # built-in or namespace module: present everywhere
    resolved = Path(path).resolve()
    return any(root in resolved.parents for root in _INSTALLED)


def pack_function(fn: Callable[..., Any], what: str = "function") -> bytes:
    """Cloudpickle ``fn`` with its own module's code by value; InputError naming the
    object that cannot be pickled otherwise."""
    if not callable(fn):
        raise InputError(f"{what}: expected a function, got {type(fn).__name__}")
    by_value = _user_modules()
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(fn)
    except Exception as e:
        raise InputError(f"{what}: cannot ship {describe(fn)} to the slaves: "
                         f"{type(e).__name__}: {e}") from None
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)


def _user_modules() -> list[ModuleType]:
    """Every imported module that is the user's own code (not installed, not rqcluster):
    the function's module and any helper module it uses travel by value."""
    found = []
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        if module is None or top in _OURS or name == "__main__" or _is_installed(module):
            continue
        found.append(module)
    return found


def unpack_function(blob: bytes) -> Callable[..., Any]:
    """The function back from ``pack_function``'s bytes (runs on a slave or combiner)."""
    fn = cloudpickle.loads(blob)
    if not callable(fn):
        raise InputError(f"shipped function is a {type(fn).__name__}, not callable")
    return fn  # type: ignore[no-any-return]


def describe(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, for messages."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
