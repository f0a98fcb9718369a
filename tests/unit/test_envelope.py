"""Signed envelopes: a payload is opened only with the right key, for the right context,
and nothing is decompressed or unpickled before its signature is checked."""

from __future__ import annotations

import json
import pickle
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from unittest import mock

import cloudpickle
import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rqcluster import envelope, functions, keys
from rqcluster.envelope import Context, EnvelopeError, open_, seal
from rqcluster.errors import VersionSkew
from rqcluster.functions import open_function, pack_function
from rqcluster.signedrq import RUN_UNIT, RefusedJob, UnitJob, job_context

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
CANARY_HITS: list[str] = []


def canary_hit(tag: str) -> str:
    CANARY_HITS.append(tag)
    return tag


class Canary:
    """Unpickling this object calls ``canary_hit``: it proves a payload was unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (canary_hit, ("unpickled",))


def canary_function(x: int) -> int:
    return x + 1


class Spies:
    """Counts calls of every unpickler and decompressor a payload could reach."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for module, name in ((pickle, "loads"), (cloudpickle, "loads"),
                             (zlib, "decompress"), (zlib, "decompressobj")):
            real = getattr(module, name)
            monkeypatch.setattr(module, name, self._spy(f"{module.__name__}.{name}", real))

    def _spy(self, label: str, real: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(label)
            return real(*args, **kwargs)
        return spy


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spies]:
    CANARY_HITS.clear()
    yield Spies(monkeypatch)
    CANARY_HITS.clear()


def canary_payload() -> bytes:
    """What a shipped function looks like, except that unpickling it trips the canary."""
    return functions._with_versions(cloudpickle.dumps(Canary()))


CTX = Context("function:function", "6720ab12cd34ef", "", "map")

contexts = st.builds(Context, payload=st.sampled_from(["function:function", "function:reduce",
                                                       "rq-job", "unit", "rq-value"]),
                     job=st.text(min_size=0, max_size=20), unit=st.text(max_size=6),
                     kind=st.sampled_from(["", "map", "matmul", "montecarlo"]))


def test_a_sealed_payload_opens_with_the_same_key_and_context() -> None:
    for compress in (False, True):
        assert open_(KEY, CTX, seal(KEY, CTX, b"payload" * 100, compress)) == b"payload" * 100


def test_a_sealed_function_round_trips_and_runs() -> None:
    sealed = seal(KEY, CTX, pack_function(canary_function), compress=True)
    assert open_function(KEY, CTX, sealed, 2**20)(41) == 42


@pytest.mark.parametrize("change", ["payload", "job", "unit", "kind"])
def test_an_envelope_replayed_into_another_context_is_refused(change: str,
                                                              spies: Spies) -> None:
    sealed = seal(KEY, CTX, canary_payload())
    other = replace(CTX, **{change: getattr(CTX, change) + "x"})
    with pytest.raises(EnvelopeError, match="bad signature"):
        open_function(KEY, other, sealed, 2**20)
    assert spies.calls == [] and CANARY_HITS == []


def test_the_canary_does_trip_when_the_envelope_is_valid(spies: Spies) -> None:
    """The spies and the canary can see an unpickling (so their silence elsewhere means
    something)."""
    sealed = seal(KEY, CTX, canary_payload())
    with pytest.raises(Exception):  # noqa: B017 - a str is not callable: refused after
        open_function(KEY, CTX, sealed, 2**20)
    assert "cloudpickle.loads" in spies.calls and CANARY_HITS == ["unpickled"]


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 64), st.just(0)),
    st.tuples(st.just("key"), st.just(0), st.just(0)),
    st.tuples(st.just("context"), st.just(0), st.just(0)),
)


def mutate(sealed: bytes, how: tuple[str, int, int], ctx: Context, other_ctx: Context
           ) -> tuple[bytes, bytes, Context]:
    """(envelope, key, context) after one attack; each differs from the sealed original."""
    name, n, bit = how
    if name == "flip":
        i = n % len(sealed)
        flipped = bytes([sealed[i] ^ (1 << bit)])
        return sealed[:i] + flipped + sealed[i + 1:], KEY, ctx
    if name == "truncate":
        return sealed[:n % len(sealed)], KEY, ctx
    if name == "extend":
        return sealed + b"\0" * n, KEY, ctx
    if name == "key":
        return sealed, OTHER_KEY, ctx
    assume_other = other_ctx if other_ctx != ctx else replace(ctx, job=ctx.job + "1")
    return sealed, KEY, assume_other


@settings(max_examples=3000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ctx=contexts, other_ctx=contexts, how=MUTATIONS, compress=st.booleans(),
       padding=st.binary(max_size=64))
def test_no_tampered_envelope_is_ever_unpickled_or_decompressed(
        spies: Spies, ctx: Context, other_ctx: Context, how: tuple[str, int, int],
        compress: bool, padding: bytes) -> None:
    """Bit flips, truncations, extensions, a wrong key and a replay into another job, unit,
    kind or payload type: each is refused, and no unpickler or decompressor is called."""
    payload = canary_payload() + padding
    sealed, key, where = mutate(seal(KEY, ctx, payload, compress), how, ctx, other_ctx)
    spies.calls.clear()
    with pytest.raises(EnvelopeError):
        open_function(key, where, sealed, 2**20)
    assert spies.calls == [] and CANARY_HITS == []


@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=MUTATIONS, job=st.from_regex(r"[0-9a-f]{14}", fullmatch=True),
       unit=st.integers(0, 10**6))
def test_no_tampered_rq_job_is_restored_or_decompressed(
        spies: Spies, how: tuple[str, int, int], job: str, unit: int) -> None:
    """The same attacks on a unit's RQ job data: the slave's job class refuses each before
    RQ decompresses or parses the data."""
    rq_id = keys.rq_job_id(job, unit)
    call = f'["{RUN_UNIT}", null, ["{job}", {unit}], {{}}]'.encode()
    other = job_context(keys.rq_job_id(job, unit + 1))
    sealed, key, where = mutate(seal(KEY, job_context(rq_id), call), how,
                                job_context(rq_id), other)
    target = rq_id if where == job_context(rq_id) else where.job
    spies.calls.clear()
    with mock.patch("rqcluster.signedrq.cluster_key", lambda: key), \
            pytest.raises(RefusedJob):
        restore(target, {b"data": sealed, b"status": b"queued"})
    assert spies.calls == []


def restore(rq_id: str, fields: dict[bytes, bytes]) -> UnitJob:
    job = UnitJob(rq_id, connection=fakeredis.FakeRedis())
    job.restore(fields)
    return job


@pytest.fixture(autouse=True)
def fixed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job class and serializer sign with this test's key."""
    monkeypatch.setattr("rqcluster.signedrq.cluster_key", lambda: KEY)


def test_a_valid_unit_job_restores_and_names_run_unit_only() -> None:
    rq_id = keys.rq_job_id("6720ab12cd34ef", 3)
    call = f'["{RUN_UNIT}", null, ["6720ab12cd34ef", 3], {{}}]'.encode()
    job = restore(rq_id, {b"data": seal(KEY, job_context(rq_id), call),
                          b"success_callback_name": b"os.system", b"webhooks": b"[]",
                          b"meta": b"\x80\x04junk"})
    assert job.func_name == RUN_UNIT and job.args == ["6720ab12cd34ef", 3]
    assert job.success_callback is None and job.meta == {} and not job.webhooks


@pytest.mark.parametrize("call", [
    '["os.system", null, ["touch /tmp/pwned"], {}]',
    f'["{RUN_UNIT}", null, ["6720ab12cd34ef", 4], {{}}]',      # another unit's call
    f'["{RUN_UNIT}", null, ["6720ab12cd34ef", 3], {{"x": 1}}]',
    f'["{RUN_UNIT}", "instance", ["6720ab12cd34ef", 3], {{}}]',
])
def test_a_validly_signed_call_of_anything_but_this_units_run_unit_is_refused(
        call: str) -> None:
    rq_id = keys.rq_job_id("6720ab12cd34ef", 3)
    with pytest.raises(RefusedJob):
        restore(rq_id, {b"data": seal(KEY, job_context(rq_id), call.encode())})


def test_a_default_pickle_rq_job_is_refused_unread(spies: Spies) -> None:
    data = zlib.compress(pickle.dumps(("os.system", None, ("echo pwned",), {})))
    spies.calls.clear()
    with pytest.raises(RefusedJob, match="not a signed"):
        restore("rqc-6720ab12cd34ef-0", {b"data": data})
    assert spies.calls == []


def test_a_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = seal(KEY, CTX, b"\0" * (64 * 2**20), compress=True)  # 64 MiB -> ~64 KiB
    assert len(bomb) < 2**20
    with pytest.raises(EnvelopeError, match="more than 1048576 bytes"):
        open_(KEY, CTX, bomb, max_size=2**20)


def test_an_oversized_envelope_is_refused_before_its_mac_is_computed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = seal(KEY, CTX, b"x" * 5000)
    monkeypatch.setattr(envelope, "_tag", lambda *a: pytest.fail("MAC computed"))
    with pytest.raises(EnvelopeError, match="over the 4096-byte limit"):
        open_(KEY, CTX, sealed, max_size=4096)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="at least 16 bytes"):
        seal(b"short", CTX, b"x")


def test_a_function_from_other_python_or_cloudpickle_versions_names_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    blob = pack_function(canary_function)
    ours = functions.versions()
    monkeypatch.setattr(functions, "versions",
                        lambda: {"python": "3.10", "cloudpickle": "2.2.1"})
    foreign = pack_function(canary_function)
    monkeypatch.undo()
    with pytest.raises(VersionSkew) as info:
        functions.unpack_function(foreign)
    message = str(info.value)
    assert "Python 3.10 with cloudpickle 2.2.1" in message
    assert f"Python {ours['python']} with cloudpickle {ours['cloudpickle']}" in message
    assert functions.unpack_function(blob)(1) == 2


@pytest.mark.parametrize(("suffix", "ok"), [("-m1", True), ("-m12", True), ("-m0", False),
                                            ("-mx", False), ("-m2x", False), ("x", False)])
def test_a_moved_units_rq_job_id_names_the_same_unit(suffix: str, ok: bool) -> None:
    """The reaper re-enqueues a unit under ``rqc-JOB-UNIT-mN``; only that form is accepted."""
    rq_id = keys.rq_job_id("6720ab12cd34ef", 3) + suffix
    call = f'["{RUN_UNIT}", null, ["6720ab12cd34ef", 3], {{}}]'.encode()
    fields = {b"data": seal(KEY, job_context(rq_id), call)}
    if ok:
        assert restore(rq_id, fields).args == ["6720ab12cd34ef", 3]
    else:
        with pytest.raises(RefusedJob, match="not this RQ job"):
            restore(rq_id, fields)


@pytest.mark.parametrize(("rq_suffix", "indexes", "ok"), [
    ("3b", [3, 4, 5], True),
    ("4b", [3, 4], False),      # the batch id names its first unit
    ("3", [3, 4], False),       # a batch under a single unit's id
    ("3b", [], False),
    ("3b", [3, "4"], False),
    ("3b", [3, -1], False),
])
def test_a_batch_of_units_is_accepted_only_under_its_own_rq_job_id(
        rq_suffix: str, indexes: list[Any], ok: bool) -> None:
    from rqcluster.signedrq import RUN_UNITS
    rq_id = f"rqc-6720ab12cd34ef-{rq_suffix}"
    call = json.dumps([RUN_UNITS, None, ["6720ab12cd34ef", indexes], {}]).encode()
    fields = {b"data": seal(KEY, job_context(rq_id), call)}
    if ok:
        job = restore(rq_id, fields)
        assert job.func_name == RUN_UNITS and job.args == ["6720ab12cd34ef", indexes]
    else:
        with pytest.raises(RefusedJob):
            restore(rq_id, fields)
