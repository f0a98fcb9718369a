"""Encoding of values that cross Redis as data (partials and results): never pickle.

A value is a tree of JSON types (None, bool, int, float, str, list, dict with str keys)
whose leaves may also be numpy arrays or numpy scalars. Arrays travel as their raw bytes
plus dtype and shape, after one small JSON header; decoding is ``numpy.frombuffer``, so
nothing on the receiving side can be made to run code by a crafted value.

Layout: ``b"RQCV" | version (1 byte) | header length (4 bytes, big-endian) | header JSON |
array buffers back to back``; header = ``{"v": tree, "a": [[dtype, shape], ...]}`` where an
array leaf in the tree is ``{"\\u0000nd": index}``.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from rqcluster.errors import DecodeError, InputError

MAGIC = b"RQCV"
VERSION = 1
# Tags: one-key dicts whose key starts with NUL stand for what JSON cannot say.
ARRAY_TAG = "\x00nd"      # {tag: index into the header's array list}
FLOAT_TAG = "\x00f"       # {tag: "nan" | "inf" | "-inf"}
INT_TAG = "\x00i"         # {tag: hex string} for ints beyond 64 bits
COMPLEX_TAG = "\x00c"     # {tag: [real, imag]}
_BIG_INT = 2**63
MAX_HEADER = 64 * 1024 * 1024
# Plain numeric data only: bool, signed/unsigned int, float, complex. Object, string,
# void (structured) and datetime dtypes are refused on both sides.
NUMERIC_KINDS = frozenset("biufc")


def check_numeric_dtype(dtype: np.dtype[Any], what: str) -> None:
    """Refuse anything but plain numeric/bool dtypes, naming ``what`` in the message."""
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject:
        raise InputError(f"{what}: dtype {dtype} is not supported; use a numeric or bool "
                         "dtype (int, uint, float, complex, bool)")


def encode(value: Any, where: str = "value") -> bytes:
    """Encode a value; InputError naming ``where`` and the first unsupported object."""
    return b"".join(encode_parts(value, where))


def encode_parts(value: Any, where: str = "value") -> list[bytes | memoryview]:
    """Like ``encode`` but leaves array buffers uncopied, for writers that take parts."""
    arrays: list[np.ndarray] = []
    tree = _to_tree(value, arrays, where)
    header = json.dumps({"v": tree, "a": [[a.dtype.str, list(a.shape)] for a in arrays]},
                        separators=(",", ":")).encode()
    parts: list[bytes | memoryview] = [MAGIC, struct.pack(">BI", VERSION, len(header)), header]
    parts += [bytes_view(a) for a in arrays]
    return parts


def bytes_view(arr: np.ndarray) -> memoryview:
    """The raw bytes of a C-contiguous array, without copying them."""
    flat = arr.reshape(-1).view(np.uint8)
    return memoryview(flat) if arr.size else memoryview(b"")  # type: ignore[arg-type]


def _to_tree(value: Any, arrays: list[np.ndarray], where: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        return _scalar(value, arrays, where)
    if isinstance(value, int):
        return value if -_BIG_INT < value < _BIG_INT else {INT_TAG: hex(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {FLOAT_TAG: repr(float(value))}
    if isinstance(value, complex):
        return {COMPLEX_TAG: [_to_tree(value.real, arrays, where),
                              _to_tree(value.imag, arrays, where)]}
    if isinstance(value, np.ndarray):
        check_numeric_dtype(value.dtype, where)
        arrays.append(np.asarray(value, order="C"))
        return {ARRAY_TAG: len(arrays) - 1}
    if isinstance(value, list | tuple):
        return [_to_tree(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: dict keys must be strings, got {type(k).__name__} "
                                 f"key {k!r}")
            # Keys starting with NUL are escaped so they never look like a tag.
            out["\x00" + k if k.startswith("\x00") else k] = _to_tree(v, arrays,
                                                                      f"{where}[{k!r}]")
        return out
    raise InputError(f"{where}: cannot send a {type(value).__module__}.{type(value).__qualname__}"
                     " between nodes (only numbers, strings, lists, dicts and numpy arrays "
                     "travel)")


def _scalar(value: np.generic, arrays: list[np.ndarray], where: str) -> Any:
    """A numpy scalar as the plain Python number it stands for (never via ``item()``, which
    returns numpy types again for longdouble)."""
    kind = value.dtype.kind
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return _to_tree(int(value), arrays, where)
    if kind == "f":
        return _to_tree(float(value), arrays, where)
    if kind == "c":
        return _to_tree(complex(value), arrays, where)  # type: ignore[arg-type]
    raise InputError(f"{where}: cannot send a numpy {value.dtype} scalar between nodes")


def decode(data: bytes | memoryview) -> Any:
    """Decode bytes made by ``encode``; DecodeError if they are anything else."""
    view = memoryview(data)
    try:
        if bytes(view[:4]) != MAGIC:
            raise ValueError("not an rqcluster value (bad magic)")
        version, hlen = struct.unpack(">BI", view[4:9])
        if version != VERSION:
            raise ValueError(f"value format version {version}, this rqcluster reads {VERSION}")
        if hlen > MAX_HEADER or 9 + hlen > len(view):
            raise ValueError("header length out of range")
        header = json.loads(bytes(view[9:9 + hlen]))
        offset = 9 + hlen
        arrays = []
        for dtype_str, shape in header["a"]:
            dtype = np.dtype(dtype_str)
            check_numeric_dtype(dtype, "decoded array")
            if not isinstance(shape, list) or not all(
                    type(n) is int and 0 <= n < 2**62 for n in shape):
                raise ValueError(f"bad array shape {shape!r}")
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            if offset + nbytes > len(view):
                raise ValueError("truncated array data")
            arr = np.frombuffer(view, dtype=dtype, count=count, offset=offset).reshape(shape)
            arrays.append(arr)
            offset += nbytes
        if offset != len(view):
            raise ValueError(f"{len(view) - offset} trailing bytes")
        return _from_tree(header["v"], arrays)
    except DecodeError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, struct.error, InputError,
            OverflowError, RecursionError) as e:
        raise DecodeError(f"cannot decode value: {e}") from e


def _from_tree(tree: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(tree, list):
        return [_from_tree(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        (key, value), = tree.items()
        if key == ARRAY_TAG:
            return arrays[value]
        if key == FLOAT_TAG:
            return float(value)
        if key == INT_TAG:
            return int(value, 16)
        if key == COMPLEX_TAG:
            real, imag = (_from_tree(v, arrays) for v in value)
            return complex(real, imag)
    out = {}
    for k, v in tree.items():
        if k.startswith("\x00"):
            if not k.startswith("\x00\x00"):
                raise ValueError(f"unknown tag {k!r}")
            k = k[1:]
        out[k] = _from_tree(v, arrays)
    return out
