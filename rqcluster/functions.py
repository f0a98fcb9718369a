"""Shipping user functions to slaves by value, with cloudpickle.

A slave has none of the user's code installed, so a function from the user's own module
is pickled together with that module's code (``register_pickle_by_value``); functions from
installed packages (numpy, the standard library, …) travel by reference as usual.

The packed bytes start with the submitter's Python and cloudpickle versions, so a slave
with other versions refuses the function with a message naming both instead of crashing
(or worse) inside the unpickler. In Redis they are always inside a signed envelope
(``rqcluster.envelope``), opened before ``unpack_function`` ever sees them.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import struct
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from rqcluster.errors import DecodeError, InputError, VersionSkew

MAGIC = b"RQCF"

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
    return _is_installed_path(path)


@functools.cache
def _is_installed_path(path: str) -> bool:
    """Cached per file: resolving every loaded module's path cost 60-100 ms a submit."""
    resolved = Path(path).resolve()
    return any(root in resolved.parents for root in _INSTALLED)


def pack_function(fn: Callable[..., Any], what: str = "function") -> bytes:
    """Cloudpickle ``fn`` with its own module's code by value; InputError naming the
    object that cannot be pickled otherwise."""
    if not callable(fn):
        raise InputError(f"{what}: expected a function, got {type(fn).__name__}")
    return pack_object(fn, what)


def pack_object(obj: Any, what: str = "object") -> bytes:
    """``pack_function`` for any object (a scheduler's saved state)."""
    by_value = _user_modules()
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return _with_versions(cloudpickle.dumps(obj))
    except Exception as e:
        raise InputError(f"{what}: cannot ship {describe(obj)} to the slaves: "
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


def versions() -> dict[str, str]:
    """What a pickled function depends on: Python's major.minor (the bytecode format;
    patch releases share it) and the exact cloudpickle version."""
    return {"python": "{}.{}".format(*sys.version_info[:2]),
            "cloudpickle": cloudpickle.__version__}


def _with_versions(pickled: bytes) -> bytes:
    header = json.dumps(versions(), separators=(",", ":")).encode()
    return MAGIC + struct.pack(">H", len(header)) + header + pickled


def check_versions(blob: bytes, what: str = "function") -> bytes:
    """The pickle inside ``pack_function``'s bytes, once the submitter's versions are
    known to match this process's; VersionSkew naming both otherwise."""
    try:
        if blob[:4] != MAGIC:
            raise ValueError("no version header")
        (length,) = struct.unpack(">H", blob[4:6])
        theirs = json.loads(blob[6:6 + length])
        if not isinstance(theirs, dict):
            raise ValueError("bad version header")
    except (ValueError, struct.error) as e:
        raise DecodeError(f"{what}: not a packed rqcluster function ({e})") from None
    ours = versions()
    if {k: theirs.get(k) for k in ours} != ours:
        raise VersionSkew(
            f"{what}: pickled by Python {theirs.get('python')} with cloudpickle "
            f"{theirs.get('cloudpickle')}, but this node runs Python {ours['python']} with "
            f"cloudpickle {ours['cloudpickle']}; install the same versions on every node")
    return blob[6 + length:]


def unpack_object(blob: bytes) -> Any:
    """An object back from ``pack_object``'s bytes, once its versions are checked; only
    ever called on a verified envelope's body."""
    return cloudpickle.loads(check_versions(blob, "saved object"))


def unpack_function(blob: bytes) -> Callable[..., Any]:
    """The function back from ``pack_function``'s bytes (runs on a slave or combiner),
    after its version header is checked; only ever called on a verified envelope's body."""
    fn = cloudpickle.loads(check_versions(blob))
    if not callable(fn):
        raise InputError(f"shipped function is a {type(fn).__name__}, not callable")
    return fn  # type: ignore[no-any-return]


def open_function(key: bytes, ctx: Any, sealed: bytes | None, max_size: int
                  ) -> Callable[..., Any]:
    """The function in a sealed envelope (``rqcluster.envelope``): its signature for
    ``ctx`` is checked first, then its versions, and only then is it unpickled."""
    from rqcluster import envelope
    return unpack_function(envelope.open_(key, ctx, sealed, max_size))


def describe(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, for messages."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
