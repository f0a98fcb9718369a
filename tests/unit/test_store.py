"""Chunked storage in Redis: arrays by row range, blobs and item lists, across chunk edges."""

from __future__ import annotations

import json
from collections.abc import Iterator

import fakeredis
import numpy as np
import pytest

from rqcluster import store
from rqcluster.errors import DecodeError, NoSuchJob


@pytest.fixture
def conn() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.flushall()
        client.close()


ARRAYS = [
    pytest.param(np.arange(51, dtype=np.int32).reshape(17, 3), id="int32-17x3"),
    pytest.param(np.linspace(-1, 1, 40).reshape(10, 2, 2), id="float64-3d"),
    pytest.param(np.arange(13, dtype=">i2"), id="big-endian-1d"),
    pytest.param((np.arange(24) % 3 == 0).reshape(8, 3), id="bool"),
    pytest.param(np.arange(10, dtype=np.complex128).reshape(5, 2) * (1 + 2j), id="complex"),
    pytest.param(np.array([[np.nan, np.inf], [-np.inf, -0.0]]), id="special-floats"),
    pytest.param(np.arange(9, dtype=np.uint8).reshape(9, 1), id="one-byte-rows"),
]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
@pytest.mark.parametrize("arr", ARRAYS)
def test_every_row_range_of_a_stored_array_equals_the_numpy_slice(
        conn: fakeredis.FakeRedis, arr: np.ndarray, chunk: int) -> None:
    store.put_array(conn, "job:a", arr, chunk=chunk)

    whole = store.get_array(conn, "job:a")
    assert whole.dtype == arr.dtype and whole.shape == arr.shape
    np.testing.assert_array_equal(whole, arr)
    for lo in range(arr.shape[0] + 1):
        for hi in range(lo, arr.shape[0] + 1):
            rows = store.get_array(conn, "job:a", rows=(lo, hi))
            assert rows.dtype == arr.dtype
            assert rows.shape == arr[lo:hi].shape
            np.testing.assert_array_equal(rows, arr[lo:hi])


def test_arrays_are_split_into_chunks_no_bigger_than_asked(conn: fakeredis.FakeRedis) -> None:
    arr = np.arange(51, dtype=np.int32).reshape(17, 3)  # 204 bytes
    store.put_array(conn, "job:a", arr, chunk=7)
    chunks = [k for k in store.keys_of(conn, "job:a") if k != "job:a"]
    assert len(chunks) == 30  # ceil(204 / 7)
    sizes = [conn.strlen(k) for k in chunks]
    assert all(size <= 7 for size in sizes) and sum(sizes) == arr.nbytes


def test_a_non_contiguous_array_is_stored_by_value(conn: fakeredis.FakeRedis) -> None:
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    for i, view in enumerate([base[:, ::3], base.T, np.asfortranarray(base), base[::-1]]):
        store.put_array(conn, f"v{i}", view, chunk=5)
        np.testing.assert_array_equal(store.get_array(conn, f"v{i}"), view)
        np.testing.assert_array_equal(store.get_array(conn, f"v{i}", rows=(1, 3)), view[1:3])


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0)])
def test_an_empty_array_round_trips_with_its_shape(conn: fakeredis.FakeRedis,
                                                   shape: tuple[int, ...]) -> None:
    arr = np.zeros(shape, dtype=np.int64)
    store.put_array(conn, "empty", arr, chunk=7)
    got = store.get_array(conn, "empty")
    assert got.shape == shape and got.dtype == arr.dtype
    assert store.get_array(conn, "empty", rows=(0, 0)).shape == (0, *shape[1:])


def test_array_dtype_and_shape_are_readable_without_the_data(conn: fakeredis.FakeRedis) -> None:
    store.put_array(conn, "a", np.zeros((4, 5), dtype=">f4"), chunk=7)
    assert store.array_meta(conn, "a") == (np.dtype(">f4"), (4, 5))


@pytest.mark.parametrize("rows", [(-1, 2), (3, 2), (0, 18), (18, 18)])
def test_a_row_range_outside_the_array_is_refused(conn: fakeredis.FakeRedis,
                                                  rows: tuple[int, int]) -> None:
    store.put_array(conn, "a", np.zeros((17, 3)), chunk=7)
    with pytest.raises(ValueError, match="out of range"):
        store.get_array(conn, "a", rows=rows)


def test_a_pipeline_can_queue_the_writes(conn: fakeredis.FakeRedis) -> None:
    arr = np.arange(100, dtype=np.int64).reshape(25, 4)
    with conn.pipeline() as pipe:
        store.put_array(pipe, "a", arr, chunk=64)
        store.put_blob(pipe, "b", b"blob bytes", chunk=3)
        assert conn.exists("a", "b") == 0  # nothing written before execute
        pipe.execute()
    np.testing.assert_array_equal(store.get_array(conn, "a", rows=(5, 20)), arr[5:20])
    assert store.get_blob(conn, "b") == b"blob bytes"


@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 63, 64, 65, 1000])
@pytest.mark.parametrize("chunk", [7, 64])
def test_a_blob_round_trips_whatever_its_size(conn: fakeredis.FakeRedis, size: int,
                                              chunk: int) -> None:
    data = bytes((i * 37 + 11) % 256 for i in range(size))
    store.put_blob(conn, "blob", data, chunk=chunk)
    assert store.get_blob(conn, "blob") == data


def test_a_blob_accepts_a_memoryview(conn: fakeredis.FakeRedis) -> None:
    data = np.arange(20, dtype=np.int16)
    store.put_blob(conn, "blob", memoryview(data), chunk=7)
    assert store.get_blob(conn, "blob") == data.tobytes()


ITEMS = [{"id": i, "word": w} for i, w in enumerate(
    ["a", "", "longer word", "déjà vu", "✓✓✓", "x" * 30, "end"])] + [None, 1.5, [1, [2]], "s"]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_every_range_of_stored_items_equals_the_list_slice(conn: fakeredis.FakeRedis,
                                                           chunk: int) -> None:
    lines = [json.dumps(item, ensure_ascii=False).encode() for item in ITEMS]
    store.put_items(conn, "items", lines, chunk=chunk)
    for start in range(len(ITEMS) + 1):
        for stop in range(start, len(ITEMS) + 1):
            assert store.get_items(conn, "items", start, stop) == ITEMS[start:stop]


def test_an_empty_item_list_round_trips(conn: fakeredis.FakeRedis) -> None:
    store.put_items(conn, "items", [], chunk=7)
    assert store.get_items(conn, "items", 0, 0) == []


@pytest.mark.parametrize(
    "put",
    [
        lambda c: store.put_array(c, "obj", np.arange(40, dtype=np.int64), chunk=64),
        lambda c: store.put_blob(c, "obj", b"z" * 100, chunk=7),
        lambda c: store.put_items(c, "obj", [b"1", b'"two"', b"[3]"] * 9, chunk=7),
        lambda c: store.put_array(c, "obj", np.zeros(0), chunk=7),
    ],
    ids=["array", "blob", "items", "empty-array"],
)
def test_keys_of_lists_every_key_the_object_uses(conn: fakeredis.FakeRedis,
                                                 put: object) -> None:
    put(conn)  # type: ignore[operator]
    stored = {k.decode() for k in conn.keys("*")}
    listed = store.keys_of(conn, "obj")
    assert len(listed) == len(set(listed))
    assert set(listed) == stored


def test_keys_of_lets_a_caller_delete_an_object_completely(conn: fakeredis.FakeRedis) -> None:
    store.put_items(conn, "a", [b"1", b"2", b"3"], chunk=2)
    store.put_array(conn, "keep", np.arange(3), chunk=7)
    conn.delete(*store.keys_of(conn, "a"))
    assert {k.decode() for k in conn.keys("*")} == set(store.keys_of(conn, "keep"))


def test_keys_of_a_missing_object_is_empty(conn: fakeredis.FakeRedis) -> None:
    assert store.keys_of(conn, "nothing") == []


def test_every_key_of_an_object_gets_the_ttl(conn: fakeredis.FakeRedis) -> None:
    store.put_items(conn, "items", [b"1", b"22", b"333"], chunk=2, ttl=600)
    store.put_array(conn, "arr", np.arange(30), chunk=16, ttl=600)
    store.put_blob(conn, "blob", b"0123456789", chunk=4, ttl=600)
    for base in ("items", "arr", "blob"):
        for key in store.keys_of(conn, base):
            assert conn.ttl(key) > 0, f"{key} never expires"


@pytest.mark.parametrize(
    "read",
    [lambda c: store.get_array(c, "gone"), lambda c: store.get_array(c, "gone", rows=(0, 1)),
     lambda c: store.get_blob(c, "gone"), lambda c: store.get_items(c, "gone", 0, 1),
     lambda c: store.array_meta(c, "gone"), lambda c: store.read_meta(c, "gone")],
    ids=["array", "array-rows", "blob", "items", "array-meta", "meta"],
)
def test_reading_a_missing_object_raises_no_such_job(conn: fakeredis.FakeRedis,
                                                     read: object) -> None:
    with pytest.raises(NoSuchJob, match="gone"):
        read(conn)  # type: ignore[operator]


def test_a_deleted_array_chunk_is_a_decode_error(conn: fakeredis.FakeRedis) -> None:
    store.put_array(conn, "a", np.arange(51, dtype=np.int32).reshape(17, 3), chunk=7)
    conn.delete("a:5")
    with pytest.raises(DecodeError, match="missing"):
        store.get_array(conn, "a")
    with pytest.raises(DecodeError):
        store.get_array(conn, "a", rows=(2, 4))  # bytes 24..48 include chunk 5 (35..42)
    np.testing.assert_array_equal(store.get_array(conn, "a", rows=(0, 2)),
                                  np.arange(6).reshape(2, 3))


def test_a_deleted_last_chunk_is_a_decode_error(conn: fakeredis.FakeRedis) -> None:
    store.put_blob(conn, "b", b"x" * 20, chunk=7)
    conn.delete("b:2")
    with pytest.raises(DecodeError):
        store.get_blob(conn, "b")


def test_a_deleted_items_chunk_is_a_decode_error(conn: fakeredis.FakeRedis) -> None:
    store.put_items(conn, "i", [b'"abc"'] * 10, chunk=7)
    conn.delete("i:3")
    with pytest.raises(DecodeError):
        store.get_items(conn, "i", 0, 10)


def test_a_deleted_items_offsets_chunk_is_a_decode_error(conn: fakeredis.FakeRedis) -> None:
    store.put_items(conn, "i", [b'"abc"'] * 10, chunk=7)
    conn.delete("i:offsets:2")
    with pytest.raises(DecodeError):
        store.get_items(conn, "i", 0, 10)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"no": "type"}', b"\xff\xfe"])
def test_a_corrupt_meta_record_is_a_decode_error(conn: fakeredis.FakeRedis, raw: bytes) -> None:
    conn.set("m", raw)
    with pytest.raises(DecodeError):
        store.read_meta(conn, "m")


@pytest.mark.parametrize(
    "meta",
    [{"type": "array"}, {"type": "array", "dtype": "|O", "shape": [1], "nbytes": 8,
                         "chunk": 8, "chunks": 1},
     {"type": "array", "dtype": "<i8", "shape": "x", "nbytes": 8, "chunk": 8, "chunks": 1}],
    ids=["fields-missing", "object-dtype", "bad-shape"],
)
def test_an_array_meta_record_that_is_corrupt_is_a_decode_error(conn: fakeredis.FakeRedis,
                                                                meta: dict[str, object]) -> None:
    conn.set("a", json.dumps(meta))
    conn.set("a:0", b"\x00" * 8)
    with pytest.raises(DecodeError):
        store.get_array(conn, "a")


@pytest.mark.parametrize("batch", [1, 7, 20, 1 << 20])
def test_arrays_read_in_pipelined_batches_equal_the_stored_array(
        conn: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    arr = np.arange(600, dtype=np.int64).reshape(40, 15)
    store.put_array(conn, "a", arr, chunk=56)  # 87 chunks; batches of 1 to all of them
    monkeypatch.setattr(store, "READ_BATCH_BYTES", batch)
    np.testing.assert_array_equal(store.get_array(conn, "a"), arr)
    for lo, hi in [(0, 1), (3, 17), (11, 40), (39, 40)]:
        np.testing.assert_array_equal(store.get_array(conn, "a", rows=(lo, hi)), arr[lo:hi])


def test_a_chunk_missing_in_an_early_batch_is_a_decode_error(
        conn: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_array(conn, "a", np.arange(600, dtype=np.int64).reshape(40, 15), chunk=56)
    monkeypatch.setattr(store, "READ_BATCH_BYTES", 112)
    conn.delete("a:3")
    with pytest.raises(DecodeError, match="missing"):
        store.get_array(conn, "a")


def test_a_staged_array_is_readable_only_once_committed_and_then_kept(conn, tmp_path):
    a = np.arange(3000 * 7, dtype=np.int64).reshape(3000, 7)
    np.save(tmp_path / "a.npy", a)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    commit = store.stage_array(conn, "x", mapped, chunk=4096, batch=3 * 4096, ttl=60)
    assert conn.get("x") is None  # no meta yet: not an array until the job commits
    assert 0 < conn.ttl("x:0") <= 60
    tx = conn.pipeline(transaction=True)
    commit(tx)
    tx.execute()
    np.testing.assert_array_equal(store.get_array(conn, "x"), a)
    np.testing.assert_array_equal(store.get_array(conn, "x", rows=(100, 205)), a[100:205])
    assert conn.ttl("x:0") == -1 and conn.ttl("x") == -1


def test_staging_an_array_in_memory_works_the_same(conn):
    a = np.linspace(0, 1, 5000).reshape(50, 100)
    commit = store.stage_array(conn, "y", a, chunk=1000)
    tx = conn.pipeline(transaction=True)
    commit(tx)
    tx.execute()
    np.testing.assert_array_equal(store.get_array(conn, "y"), a)


def test_staging_a_slice_of_a_memory_mapped_file_stores_the_slice(conn, tmp_path):
    a = np.arange(400 * 5, dtype=np.float64).reshape(400, 5)
    np.save(tmp_path / "a.npy", a)
    part = np.load(tmp_path / "a.npy", mmap_mode="r")[100:300]
    commit = store.stage_array(conn, "z", part, chunk=1024)
    tx = conn.pipeline(transaction=True)
    commit(tx)
    tx.execute()
    np.testing.assert_array_equal(store.get_array(conn, "z"), a[100:300])
