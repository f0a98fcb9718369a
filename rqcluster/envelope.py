"""Signed envelopes: the only way a payload that will be unpickled or run crosses Redis.

Anyone who can write a Redis key could otherwise make a slave unpickle (run) anything.
Every payload a slave or the combiner acts on as code or instructions (RQ job data,
shipped functions, unit specs) is sealed here with an HMAC-SHA256 keyed by the cluster
secret, over the payload bytes *and* its context: what it is (``payload``), the job, the
unit and the job kind, plus the envelope format version. ``open_`` checks the tag with
``hmac.compare_digest`` before it decompresses or parses anything, so a flipped bit, a
truncation, another cluster's key, or a valid envelope copied into another job or unit
is refused before a single byte of the payload is interpreted.

Layout::

    b"RQCS" | version (1 byte) | flags (1 byte) | tag (32 bytes) | body

``flags`` bit 0: the body is zlib-compressed (decompressed after verification, and never
beyond ``max_size`` bytes, so a decompression bomb cannot exhaust memory). The MAC input
is a length-prefixed encoding of (version, flags, payload, job, unit, kind, body), so no
two different contexts can produce the same MAC input.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass

from rqcluster.errors import RQClusterError

MAGIC = b"RQCS"
VERSION = 1
FLAG_ZLIB = 0x01
TAG_BYTES = 32
HEADER_BYTES = len(MAGIC) + 2 + TAG_BYTES
# Default bound on any opened payload (after decompression): 1 GiB.
DEFAULT_MAX_SIZE = 2**30
_DOMAIN = b"rqcluster-envelope"


class EnvelopeError(RQClusterError):
    """Raised when a payload's signature, context, size or format is not acceptable."""


@dataclass(frozen=True)
class Context:
    """What a payload is and where it belongs; bound into its MAC.

    ``payload`` names the payload type (``rq-job``, ``function:map``, ``unit``, …),
    ``job`` the rqcluster job id, ``unit`` the unit index (or "" for per-job payloads),
    ``kind`` the job kind (or "" where the verifier cannot know it)."""

    payload: str
    job: str
    unit: str = ""
    kind: str = ""

    def describe(self) -> str:
        where = f"job {self.job}" + (f" unit {self.unit}" if self.unit else "")
        return f"{self.payload} of {where}"


def _mac_input(flags: int, ctx: Context, body: bytes | memoryview) -> list[bytes | memoryview]:
    parts: list[bytes | memoryview] = [_DOMAIN, struct.pack(">BB", VERSION, flags)]
    for field in (ctx.payload, ctx.job, ctx.unit, ctx.kind):
        raw = field.encode()
        parts += [struct.pack(">I", len(raw)), raw]
    parts += [struct.pack(">Q", len(body)), body]
    return parts


def _tag(key: bytes, flags: int, ctx: Context, body: bytes | memoryview) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in _mac_input(flags, ctx, body):
        mac.update(part)
    return mac.digest()


def seal(key: bytes, ctx: Context, data: bytes | memoryview, compress: bool = False) -> bytes:
    """The envelope of ``data`` for ``ctx``: header, tag and (optionally compressed) body."""
    _check_key(key)
    body: bytes | memoryview = zlib.compress(data, 6) if compress else data
    flags = FLAG_ZLIB if compress else 0
    tag = _tag(key, flags, ctx, body)
    return b"".join((MAGIC, struct.pack(">BB", VERSION, flags), tag, body))


def open_(key: bytes, ctx: Context, envelope: bytes | memoryview | None,
          max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The payload of a sealed envelope, after checking its tag against ``ctx``.

    EnvelopeError (saying what, never echoing the bytes) if it is missing, malformed,
    too large, signed with another key or for another context. Nothing is decompressed
    or parsed before the tag has been checked."""
    _check_key(key)
    what = ctx.describe()
    if envelope is None:
        raise EnvelopeError(f"{what}: missing")
    view = memoryview(envelope)
    if len(view) < HEADER_BYTES or bytes(view[:4]) != MAGIC:
        raise EnvelopeError(f"{what}: not a signed rqcluster payload (refused unread)")
    version, flags = view[4], view[5]
    if version != VERSION:
        raise EnvelopeError(f"{what}: envelope format {version}, this rqcluster reads "
                            f"{VERSION}")
    if flags & ~FLAG_ZLIB:
        raise EnvelopeError(f"{what}: unknown envelope flags {flags:#x}")
    body = view[HEADER_BYTES:]
    if len(body) > max_size:
        raise EnvelopeError(f"{what}: {len(body)} bytes, over the {max_size}-byte limit")
    expected = _tag(key, flags, ctx, body)
    if not hmac.compare_digest(expected, bytes(view[6:HEADER_BYTES])):
        raise EnvelopeError(f"{what}: bad signature (tampered, truncated, signed with another "
                            "cluster secret, or copied from another job or unit); refused "
                            "unread")
    if flags & FLAG_ZLIB:
        return _bounded_decompress(body, max_size, what)
    return bytes(body)


def _bounded_decompress(body: memoryview, max_size: int, what: str) -> bytes:
    """zlib-decompress at most ``max_size`` bytes: a bomb is refused, never inflated."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, max_size)
    except zlib.error as e:
        raise EnvelopeError(f"{what}: corrupt compressed body: {e}") from None
    if inflater.unconsumed_tail:
        raise EnvelopeError(f"{what}: decompresses to more than {max_size} bytes (refused)")
    if not inflater.eof or inflater.unused_data:
        raise EnvelopeError(f"{what}: truncated or padded compressed body")
    return out


def sign_detached(key: bytes, ctx: Context, data: bytes) -> str:
    """A detached tag (hex) over ``data`` for ``ctx``: for records that stay readable JSON
    in Redis (unit records) but must not be changed by anyone without the secret."""
    _check_key(key)
    return _tag(key, 0, ctx, data).hex()


def verify_detached(key: bytes, ctx: Context, data: bytes, tag: str) -> None:
    """EnvelopeError unless ``tag`` is ``sign_detached``'s tag of ``data`` for ``ctx``."""
    _check_key(key)
    expected = _tag(key, 0, ctx, data).hex()
    if not hmac.compare_digest(expected.encode(), tag.encode("ascii", "replace")):
        raise EnvelopeError(f"{ctx.describe()}: bad signature (tampered, signed with another "
                            "cluster secret, or copied from another job or unit); refused")


def is_sealed(data: bytes | memoryview | None) -> bool:
    """True if ``data`` looks like an envelope (says nothing about its signature)."""
    return data is not None and bytes(memoryview(data)[:4]) == MAGIC


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < 16:
        raise EnvelopeError("the cluster secret must be at least 16 bytes")
