"""Large data in Redis: arrays, byte blobs and item lists, chunked and read by range.

Redis caps one value at 512 MB and a slave needs only its rows of A, so everything big
is written as fixed-size chunks under a base key, with a small JSON meta record at the
base key itself:

    <base>           JSON meta: {"type": "array"|"blob"|"items", "nbytes", "chunk", ...}
    <base>:<i>       chunk i of the raw bytes (C order for arrays)
    <base>:offsets   (items only) int64 array of n+1 byte offsets into the JSON-lines blob

A row range of an array is a byte range of its chunks, fetched with pipelined GETRANGE
and viewed with ``numpy.frombuffer`` — array data is never pickled.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import redis

from rqcluster import codec
from rqcluster.codec import bytes_view, check_numeric_dtype
from rqcluster.errors import DecodeError, InputError, NoSuchJob

# 4 MiB: measured fastest to write and read here (one 32 MiB SET is 3x slower).
CHUNK_BYTES = 4 * 1024 * 1024
# An array is read in pipelines of at most this many bytes, each copied straight into the
# result: a reader holds the array plus one batch, not the array twice (a pipeline's
# replies all live until it returns, and joining them would copy them again).
READ_BATCH_BYTES = 64 * 1024 * 1024


def put_array(pipe: Any, base: str, arr: np.ndarray, chunk: int = CHUNK_BYTES,
              ttl: int | None = None) -> None:
    """Queue the writes that store ``arr`` under ``base`` on a pipeline (or client)."""
    arr = np.ascontiguousarray(arr)
    meta = {"type": "array", "dtype": arr.dtype.str, "shape": list(arr.shape)}
    _put_bytes(pipe, base, bytes_view(arr), chunk, meta, ttl)


# Arrays bigger than this are staged (``stage_array``) rather than queued on the job's
# transaction, which would hold every chunk in the submitter's memory until it is sent.
STAGE_ABOVE_BYTES = 64 * 1024 * 1024
# Staged chunks live this long unless the job's transaction keeps them (a submitter that
# dies half-way leaves nothing behind for good).
STAGE_TTL = 3600


def stage_array(conn: redis.Redis, base: str, arr: np.ndarray, chunk: int = CHUNK_BYTES,
                batch: int = READ_BATCH_BYTES, ttl: int = STAGE_TTL) -> Any:
    """Write ``arr``'s chunks now, ~``batch`` bytes per round trip, each with a TTL; return
    a function that queues, on the job's transaction, the meta record and the PERSIST of
    every chunk (so the array appears whole with the job, or expires without it).

    An array memory-mapped from a .npy file is read with plain reads, a chunk at a time:
    the submitter holds about one batch, not the file's pages."""
    arr = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    nbytes = arr.nbytes
    n = math.ceil(nbytes / chunk)
    per_trip = max(1, batch // chunk)
    with _sequential_reader(arr) as read:
        for first in range(0, n, per_trip):
            pipe = conn.pipeline(transaction=False)
            for i in range(first, min(n, first + per_trip)):
                pipe.set(f"{base}:{i}", read(chunk), ex=ttl)
            pipe.execute()
    meta = {"type": "array", "dtype": arr.dtype.str, "shape": list(arr.shape),
            "nbytes": nbytes, "chunk": chunk, "chunks": n}

    def commit(tx: Any) -> None:
        tx.set(base, json.dumps(meta))
        for i in range(n):
            tx.persist(f"{base}:{i}")
    return commit


@contextlib.contextmanager
def _sequential_reader(arr: np.ndarray) -> Iterator[Callable[[int], Any]]:
    """``read(n)``: the next ``n`` bytes of a C-contiguous array — from its file when it is
    memory-mapped from one (plain reads, its pages never mapped in), else from memory."""
    filename = getattr(arr, "filename", None)
    # Only a memmap that maps the file itself (not a slice or view of one, whose offset
    # attribute is its parent's) lies at ``offset`` in ``filename``.
    if isinstance(arr, np.memmap) and filename is not None and isinstance(arr.base, mmap.mmap):
        with open(filename, "rb") as f:
            f.seek(int(arr.offset))
            yield f.read
        return
    view = bytes_view(arr)
    position = 0

    def from_memory(n: int) -> memoryview:
        nonlocal position
        position += n
        return view[position - n:position]
    yield from_memory


def put_blob(pipe: Any, base: str, data: bytes | memoryview, chunk: int = CHUNK_BYTES,
             ttl: int | None = None) -> None:
    """Queue the writes that store opaque bytes under ``base``."""
    _put_bytes(pipe, base, memoryview(data).cast("B"), chunk, {"type": "blob"}, ttl)


ITEM_FORMATS = ("json", "codec")


def put_items(pipe: Any, base: str, lines: list[bytes], chunk: int = CHUNK_BYTES,
              ttl: int | None = None, fmt: str = "json") -> None:
    """Queue the writes that store a list of encoded items (one ``bytes`` each), each a
    JSON document (``fmt="json"``) or an ``rqcluster.codec`` value (``fmt="codec"``)."""
    if fmt not in ITEM_FORMATS:
        raise ValueError(f"unknown item format {fmt!r}")
    offsets = np.zeros(len(lines) + 1, dtype="<i8")
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    _put_bytes(pipe, base, memoryview(b"".join(lines)), chunk,
               {"type": "items", "count": len(lines), "format": fmt}, ttl)
    put_array(pipe, f"{base}:offsets", offsets, chunk, ttl)


def _put_bytes(pipe: Any, base: str, data: memoryview, chunk: int, meta: dict[str, Any],
               ttl: int | None) -> None:
    n = math.ceil(len(data) / chunk)
    meta = {**meta, "nbytes": len(data), "chunk": chunk, "chunks": n}
    pipe.set(base, json.dumps(meta), ex=ttl)
    for i in range(n):
        pipe.set(f"{base}:{i}", data[i * chunk:(i + 1) * chunk], ex=ttl)


def read_meta(conn: redis.Redis, base: str) -> dict[str, Any]:
    """The meta record of a stored object; NoSuchJob if it is gone (expired or collected)."""
    raw = conn.get(base)
    if raw is None:
        raise NoSuchJob(f"{base} is not in Redis (the job expired or was collected)")
    try:
        meta = json.loads(raw)
        assert isinstance(meta, dict) and "type" in meta
        return meta
    except (ValueError, AssertionError) as e:
        raise DecodeError(f"{base}: corrupt meta record") from e


def _read_range(conn: redis.Redis, base: str, meta: dict[str, Any], start: int,
                stop: int) -> bytes:
    """Bytes [start, stop) of a stored object, one pipelined round trip over its chunks."""
    if stop <= start:
        return b""
    chunk = meta["chunk"]
    pipe = conn.pipeline(transaction=False)
    for i in range(start // chunk, (stop - 1) // chunk + 1):
        lo = max(start - i * chunk, 0)
        hi = min(stop - i * chunk, chunk) - 1
        pipe.getrange(f"{base}:{i}", lo, hi)
    pieces = pipe.execute()
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if len(data) != stop - start:
        raise DecodeError(f"{base}: expected {stop - start} bytes, found {len(data)} "
                          "(a chunk is missing)")
    return data


def _read_into(conn: redis.Redis, base: str, meta: dict[str, Any], start: int,
               out: memoryview) -> None:
    """Fill ``out`` with bytes [start, start + len(out)) of a stored object, in pipelined
    batches of at most READ_BATCH_BYTES, each piece copied into place as it arrives."""
    stop = start + len(out)
    if stop <= start:
        return
    chunk = meta["chunk"]
    first, last = start // chunk, (stop - 1) // chunk
    per_batch = max(1, READ_BATCH_BYTES // chunk)
    filled = 0
    for batch in range(first, last + 1, per_batch):
        pipe = conn.pipeline(transaction=False)
        for i in range(batch, min(batch + per_batch, last + 1)):
            pipe.getrange(f"{base}:{i}", max(start - i * chunk, 0),
                          min(stop - i * chunk, chunk) - 1)
        for piece in pipe.execute():
            if filled + len(piece) > len(out):
                break
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
    if filled != len(out):
        raise DecodeError(f"{base}: expected {len(out)} bytes, found {filled} "
                          "(a chunk is missing)")


def get_array(conn: redis.Redis, base: str, rows: tuple[int, int] | None = None,
              meta: dict[str, Any] | None = None) -> np.ndarray:
    """The stored array, or only rows [rows[0], rows[1]) of it (a new array)."""
    meta = meta or read_meta(conn, base)
    dtype, shape = _array_layout(base, meta)
    row_bytes = dtype.itemsize * math.prod(shape[1:])
    lo, hi = (0, shape[0]) if rows is None else rows
    if not 0 <= lo <= hi <= shape[0]:
        raise ValueError(f"rows {lo}:{hi} out of range for {shape[0]} rows")
    arr = np.empty([hi - lo, *shape[1:]], dtype=dtype)
    _read_into(conn, base, meta, lo * row_bytes, bytes_view(arr))
    return arr


def _array_layout(base: str, meta: dict[str, Any]) -> tuple[np.dtype[Any], list[int]]:
    """Dtype and shape from an array's meta record; DecodeError unless they are sane."""
    try:
        if meta.get("type") != "array":
            raise ValueError(f"holds a {meta.get('type')}, not an array")
        dtype = np.dtype(meta["dtype"])
        check_numeric_dtype(dtype, "stored array")
        shape = meta["shape"]
        if not isinstance(shape, list) or not shape or not all(
                type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"bad shape {shape!r}")
        if math.prod(shape) * dtype.itemsize != meta["nbytes"]:
            raise ValueError("shape and size disagree")
        return dtype, shape
    except (KeyError, TypeError, ValueError, InputError) as e:
        raise DecodeError(f"{base}: corrupt array meta record: {e}") from e


def array_meta(conn: redis.Redis, base: str) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """Dtype and shape of a stored array, without reading its data."""
    dtype, shape = _array_layout(base, read_meta(conn, base))
    return dtype, tuple(shape)


def get_blob(conn: redis.Redis, base: str) -> bytes:
    """The stored bytes, whole."""
    meta = read_meta(conn, base)
    return _read_range(conn, base, meta, 0, meta["nbytes"])


def get_items(conn: redis.Redis, base: str, start: int, stop: int) -> list[Any]:
    """Items [start, stop) of a stored item list, decoded."""
    meta = read_meta(conn, base)
    offsets = get_array(conn, f"{base}:offsets", rows=(start, stop + 1))
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = _read_range(conn, base, meta, lo, hi)
    rel = offsets - lo
    decode = codec.decode if meta.get("format") == "codec" else json.loads
    return [decode(data[rel[i]:rel[i + 1]]) for i in range(stop - start)]


def keys_of(conn: redis.Redis, base: str) -> list[str]:
    """Every key that makes up the stored object at ``base`` (for expiry and deletion)."""
    raw = conn.get(base)
    if raw is None:
        return []
    meta = json.loads(raw)
    keys = [base] + [f"{base}:{i}" for i in range(meta["chunks"])]
    if meta["type"] == "items":
        keys += keys_of(conn, f"{base}:offsets")
    return keys
