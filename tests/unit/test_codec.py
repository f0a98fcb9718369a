"""The value codec: partials and results cross Redis as JSON plus raw array bytes, never pickle."""

from __future__ import annotations

import decimal
import json
import math
import pickle
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rqcluster import codec
from rqcluster.errors import DecodeError, InputError, RQClusterError

NUMERIC_DTYPES = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "g",
                  "c8", "c16", "G", ">i2", ">i8", ">u4", ">f4", ">f8", ">c16"]


def round_trip(value: Any) -> Any:
    return codec.decode(codec.encode(value))


def sample_array(dtype: str, shape: tuple[int, ...] = (2, 3, 4)) -> np.ndarray:
    """Distinct values of ``dtype``, with nan and ±inf among them where the dtype has them."""
    dt = np.dtype(dtype)
    base = np.arange(math.prod(shape)).reshape(shape)
    if dt.kind == "b":
        return (base % 3 == 0).astype(dt)
    if dt.kind == "u":
        return base.astype(dt)
    arr = (base - 7).astype(dt)
    if dt.kind == "c":
        arr = arr + (1j * base[..., ::-1]).astype(dt)
    if dt.kind in "fc":
        flat = arr.reshape(-1)
        flat[:3] = [np.nan, np.inf, -np.inf]
    return arr.astype(dt)


def assert_same_array(got: Any, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype and got.dtype.str == want.dtype.str
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# --- round trips ----------------------------------------------------------------------------

def test_nested_json_values_round_trip() -> None:
    value = {"a": [1, 2, {"b": None, "c": [True, False]}], "s": "déjà vu ✓", "e": {}, "l": [],
             "n": {"deeper": {"still": [[[], [0]]]}}, "neg": -12, "f": 0.1}
    assert round_trip(value) == value


def test_tuples_come_back_as_lists() -> None:
    assert round_trip({"rows": (3, 9)}) == {"rows": [3, 9]}


@pytest.mark.parametrize("n", [2**63, 2**64 + 1, -(2**63) - 1, 2**200, -(10**80)])
def test_ints_beyond_64_bits_round_trip_exactly(n: int) -> None:
    got = round_trip([n])
    assert got == [n] and type(got[0]) is int


def test_ints_of_thousands_of_digits_round_trip() -> None:
    # A map over factorials (or any exact big-number sum) yields ints of this size.
    n = math.factorial(2000)  # 5,736 digits: past Python's default int/str limit
    assert round_trip({"v": n}) == {"v": n}


def test_special_floats_round_trip() -> None:
    nan, inf, ninf, negzero, tiny, big = round_trip(
        [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308])
    assert math.isnan(nan)
    assert inf == math.inf and ninf == -math.inf
    assert negzero == 0.0 and math.copysign(1, negzero) == -1
    assert tiny == 5e-324 and big == 1.7976931348623157e308


def test_floats_round_trip_bit_for_bit() -> None:
    values = [0.1, 1 / 3, math.pi, 2.0**-1074, 123456789.123456789]
    assert [v.hex() for v in round_trip(values)] == [v.hex() for v in values]


@pytest.mark.parametrize(
    "scalar",
    [np.int8(-5), np.int64(-(2**63)), np.uint64(2**64 - 1), np.float16(1.5), np.float32(0.1),
     np.float64(np.nan), np.float64(np.inf), np.float64(-np.inf), np.float32(np.inf),
     np.bool_(True), np.bool_(False)],
    ids=repr,
)
def test_numpy_scalars_round_trip_to_the_same_value(scalar: np.generic) -> None:
    got = round_trip({"x": scalar})["x"]
    if isinstance(scalar, np.floating) and np.isnan(scalar):
        assert math.isnan(got)
    else:
        assert got == scalar
    assert isinstance(got, bool) == isinstance(scalar, np.bool_)


@pytest.mark.parametrize("value", [np.complex64(1 - 2j), np.complex128(3.5 + 0.25j), 2 - 1j],
                         ids=repr)
def test_complex_scalars_round_trip_as_scalars(value: Any) -> None:
    got = round_trip(value)
    assert np.ndim(got) == 0, f"a scalar came back with shape {np.shape(got)}"
    assert complex(got) == complex(value)


def test_a_longdouble_scalar_round_trips_or_is_refused_cleanly() -> None:
    value = np.longdouble(1.5)
    try:
        encoded = codec.encode(value)
    except InputError:
        return
    assert codec.decode(encoded) == value


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_arrays_of_every_numeric_dtype_round_trip_with_their_dtype(dtype: str) -> None:
    arr = sample_array(dtype)
    assert_same_array(round_trip({"c": arr})["c"], arr)


@pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0), (3, 0, 2), (1, 1), (7,)])
@pytest.mark.parametrize("dtype", ["f8", "i4", "?", "c8"])
def test_zero_size_and_small_arrays_keep_their_shape(shape: tuple[int, ...], dtype: str) -> None:
    arr = np.zeros(shape, dtype=dtype)
    assert_same_array(round_trip(arr), arr)


@pytest.mark.parametrize("dtype", ["f8", "i8", "?"])
def test_a_zero_dimensional_array_keeps_its_shape(dtype: str) -> None:
    arr = np.array(5, dtype=dtype)
    assert_same_array(round_trip(arr), arr)


def test_non_contiguous_and_fortran_order_arrays_round_trip_by_value() -> None:
    base = np.arange(120, dtype=np.int64).reshape(10, 12)
    views = [base[:, ::3], base[::-2], base.T, np.asfortranarray(base), base[2:7, 3:4]]
    for view in views:
        got = round_trip(view)
        assert_same_array(got, np.ascontiguousarray(view))
        assert got.flags.c_contiguous


def test_several_arrays_in_one_value_keep_their_places() -> None:
    a, b, c = np.arange(6).reshape(2, 3), np.ones(0, "f4"), np.array([[1 + 1j]])
    got = round_trip({"a": a, "list": [b, {"c": c}], "again": a})
    assert_same_array(got["a"], a)
    assert_same_array(got["list"][0], b)
    assert_same_array(got["list"][1]["c"], c)
    assert_same_array(got["again"], a)


def test_encode_parts_join_to_encode() -> None:
    value = {"x": np.arange(10, dtype="f4")[::2], "y": [1, "two"]}
    parts = codec.encode_parts(value)
    assert b"".join(bytes(p) for p in parts) == codec.encode(value)


def test_decode_accepts_memoryviews_and_bytearrays() -> None:
    data = codec.encode({"a": np.arange(4)})
    for form in (memoryview(data), bytearray(data)):
        assert_same_array(codec.decode(form)["a"], np.arange(4))


def test_dicts_whose_keys_look_like_internal_tags_round_trip() -> None:
    # Keys come from user functions' return values; they must not be mistaken for markers.
    for value in ({"\x00f": "1.5"}, {"\x00nd": 0}, {"\x00nd": "x"}):
        assert round_trip(value) == value


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | hnp.arrays(st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(endianness="="),
                           hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                           hnp.complex_number_dtypes()),
                 hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text("abcdefghij_", max_size=6), inner, max_size=4),
    max_leaves=12)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape \
            and bool(np.array_equal(a, b, equal_nan=b.dtype.kind in "fc"))
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in b)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, derandomize=True)
@given(json_like)
def test_any_supported_value_round_trips(value: Any) -> None:
    assert _equal(round_trip(value), value)


# --- refusals on encode ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (np.array([1, "a"], dtype=object), "dtype object"),
        (np.array(["ab", "c"]), "<U2"),
        (np.array([b"ab"]), "|S2"),
        (np.zeros(2, dtype=[("x", "i4"), ("y", "f8")]), "not supported"),
        (np.array(["2024-01-01"], dtype="datetime64[D]"), "datetime64"),
        (np.array([1], dtype="timedelta64[s]"), "timedelta64"),
        (object(), "builtins.object"),
        ({1, 2}, "builtins.set"),
        (b"raw bytes", "builtins.bytes"),
        (decimal.Decimal("1.5"), "decimal.Decimal"),
        (np.datetime64("2024-01-01"), "datetime"),
        (lambda x: x, "function"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_values_that_are_not_plain_data_are_refused(value: Any, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        codec.encode({"result": [0, value]})
    message = str(info.value)
    assert fragment in message
    assert "value['result'][1]" in message
    assert "\n" not in message


def test_dict_keys_must_be_strings() -> None:
    with pytest.raises(InputError, match="dict keys must be strings.*int key 3"):
        codec.encode({"ok": {3: "x"}})


def test_refusals_are_rqcluster_errors() -> None:
    with pytest.raises(RQClusterError):
        codec.encode(object())


# --- decode: anything that is not ours is a DecodeError ----------------------------------

def craft(header: Any, data: bytes = b"", version: int = codec.VERSION) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return codec.MAGIC + struct.pack(">BI", version, len(raw)) + raw + data


GOOD = codec.encode({"c": np.arange(12, dtype=np.int64).reshape(3, 4), "n": 7,
                     "f": [float("nan"), 1.5]})

GARBAGE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"RQC", id="short-magic"),
    pytest.param(b"RQCV", id="magic-only"),
    pytest.param(b"RQCV\x01\x00", id="short-length"),
    pytest.param(b"hello, world: definitely not a value", id="text"),
    pytest.param(pickle.dumps({"a": 1}), id="a-pickle"),
    pytest.param(b"XQCV" + GOOD[4:], id="wrong-magic"),
    pytest.param(GOOD[:4] + b"\x02" + GOOD[5:], id="newer-version"),
    pytest.param(GOOD[:4] + b"\x00" + GOOD[5:], id="version-zero"),
    pytest.param(GOOD + b"\x00", id="trailing-byte"),
    pytest.param(GOOD[:5] + struct.pack(">I", 10**6) + GOOD[9:], id="header-too-long"),
    pytest.param(craft(b"{not json"), id="header-not-json"),
    pytest.param(craft(b"\xff\xfe"), id="header-not-utf8"),
    pytest.param(craft([1, 2]), id="header-a-list"),
    pytest.param(craft({"v": 1}), id="header-without-arrays"),
    pytest.param(craft({"a": []}), id="header-without-value"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["|O", [1]]]}, b"\x00" * 8),
                 id="object-dtype"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["|O8", [1]]]}, b"\x00" * 8),
                 id="object-dtype-sized"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [[[["f0", "|O"]], [1]]]}, b"\x00" * 8),
                 id="structured-with-object"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["<M8[s]", [1]]]}, b"\x00" * 8),
                 id="datetime-dtype"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["|S4", [1]]]}, b"abcd"), id="bytes-dtype"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["no-such-dtype", [1]]]}), id="bad-dtype"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [[7, [1]]]}), id="numeric-dtype-name"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["<i8", [2]]]}, b"\x00" * 8),
                 id="array-data-short"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["<i8", "ab"]]}), id="shape-a-string"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["<i8", [1.5]]]}, b"\x00" * 12),
                 id="shape-fractional"),
    pytest.param(craft({"v": {"\x00nd": 0}, "a": [["<i8", [2**70]]]}), id="shape-huge"),
    pytest.param(craft({"v": {"\x00nd": 3}, "a": []}), id="array-index-missing"),
    pytest.param(craft({"v": {"\x00nd": "0"}, "a": [["<i8", [1]]]}, b"\x00" * 8),
                 id="array-index-a-string"),
    pytest.param(craft({"v": {"\x00f": "not a float"}, "a": []}), id="float-tag-garbage"),
    pytest.param(craft({"v": {"\x00f": [1]}, "a": []}), id="float-tag-a-list"),
    pytest.param(craft({"v": 1, "a": [["<i8"]]}), id="array-entry-short"),
    pytest.param(craft({"v": 1, "a": 5}), id="arrays-not-a-list"),
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_a_negative_array_shape_is_a_decode_error() -> None:
    # With count -1, numpy.frombuffer reads "the rest", and the offset walks backwards.
    data = craft({"v": [{"\x00nd": 0}, {"\x00nd": 1}], "a": [["|i1", [-1]], ["|i1", [1]]]})
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_a_hugely_negative_array_shape_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        codec.decode(craft({"v": {"\x00nd": 0}, "a": [["<i8", [-(2**70)]]]}))


def test_a_deeply_nested_header_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        codec.decode(craft(b"[" * 100_000 + b"]" * 100_000))


def test_every_truncation_of_a_value_is_a_decode_error() -> None:
    for cut in range(len(GOOD)):
        with pytest.raises(DecodeError):
            codec.decode(GOOD[:cut])


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_random_bytes_after_the_magic_never_raise_anything_but_decode_error(tail: bytes) -> None:
    for data in (tail, codec.MAGIC + tail, codec.MAGIC + b"\x01" + tail):
        try:
            codec.decode(data)
        except DecodeError:
            pass


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.data())
def test_corrupting_bytes_of_a_value_never_raises_anything_but_decode_error(
        data: st.DataObject) -> None:
    corrupt = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(corrupt) - 1))
        corrupt[i] = data.draw(st.integers(0, 255))
    try:
        codec.decode(bytes(corrupt))
    except DecodeError:
        pass


def test_decoding_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(np, "load", refuse)
    value = {f"a{d}": sample_array(d) for d in NUMERIC_DTYPES}
    value["nested"] = [{"n": 2**100, "f": float("inf")}, np.zeros((0, 3))]
    got = round_trip(value)
    for d in NUMERIC_DTYPES:
        assert_same_array(got[f"a{d}"], value[f"a{d}"])
    with pytest.raises(DecodeError):
        codec.decode(pickle.dumps(np.arange(3)))


@pytest.mark.parametrize("dtype", ["|O", "<M8[s]", "|V8", "<U3", "|S4"])
def test_a_crafted_value_claiming_a_non_numeric_dtype_is_refused_by_name(dtype: str) -> None:
    """Arrays come back as raw bytes whose dtype must be plain numeric or bool: an object
    dtype (which numpy would fill with pointers) is refused, never interpreted."""
    crafted = craft({"v": {codec.ARRAY_TAG: 0}, "a": [[dtype, [2]]]}, b"\0" * 32)
    with pytest.raises(DecodeError) as info:
        codec.decode(crafted)
    assert f"dtype {np.dtype(dtype)} is not supported" in str(info.value)
