"""Wire records: the job hash and the unit record survive Redis, and corruption is a DecodeError."""

from __future__ import annotations

import dataclasses
from typing import Any

import fakeredis
import pytest

from rqcluster.errors import DecodeError
from rqcluster.models import FORMAT, JobRecord, JobState, UnitRecord

FULL = JobRecord(
    id="j-0123abcd", kind="matmul", state=JobState.RUNNING,
    params={"a_shape": [3, 4], "b_shape": [4, 2], "dtype": "<i8", "note": "déjà ✓"},
    description="matmul (3x4) @ (4x2) int64", submitted=1700000000.123456789,
    inputs=("a", "b"), stages=("main", "second"), total=12, remaining=5,
    started=1700000001.5, finished=1700000002.25,
    error={"unit": 3, "slave": "slave1", "traceback": "Traceback ...\nZeroDivisionError"},
    waiting="for live slaves",
)
MINIMAL = JobRecord(id="j1", kind="montecarlo", state=JobState.SUBMITTED,
                    params={"samples": 10, "seed": 2**100}, description="",
                    submitted=0.1)


@pytest.mark.parametrize("record", [FULL, MINIMAL], ids=["full", "minimal"])
def test_a_job_record_round_trips_through_its_encoding(record: JobRecord) -> None:
    assert JobRecord.decode(record.encode()) == record


@pytest.mark.parametrize("record", [FULL, MINIMAL], ids=["full", "minimal"])
def test_a_job_record_round_trips_through_a_redis_hash(record: JobRecord) -> None:
    conn = fakeredis.FakeRedis()
    conn.hset("job", mapping=record.encode())
    raw = conn.hgetall("job")
    assert all(isinstance(k, bytes) for k in raw)
    assert JobRecord.decode(raw) == record


def test_timestamps_round_trip_exactly() -> None:
    record = dataclasses.replace(MINIMAL, submitted=0.1 + 0.2, started=1 / 3)
    decoded = JobRecord.decode(record.encode())
    assert decoded.submitted.hex() == (0.1 + 0.2).hex()
    assert decoded.started is not None and decoded.started.hex() == (1 / 3).hex()


def test_unset_optional_fields_are_left_out_of_the_hash() -> None:
    fields = MINIMAL.encode()
    for name in ("total", "remaining", "started", "finished", "error", "waiting"):
        assert name not in fields
    assert fields["v"] == str(FORMAT)
    assert all(isinstance(v, str) for v in fields.values())


def test_a_record_without_stages_or_description_gets_the_defaults() -> None:
    fields = FULL.encode()
    del fields["stages"], fields["description"], fields["v"]
    decoded = JobRecord.decode(fields)
    assert decoded.stages == ("main",)
    assert decoded.description == ""


def test_done_units_counts_finished_units_and_zero_before_placement() -> None:
    assert FULL.done_units == 7
    assert MINIMAL.done_units == 0
    assert FULL.to_dict()["done"] == 7
    assert FULL.to_dict()["state"] == "running"


@pytest.mark.parametrize(
    ("state", "terminal"),
    [(JobState.SUBMITTED, False), (JobState.RUNNING, False), (JobState.DONE, True),
     (JobState.FAILED, True), (JobState.CANCELLED, True)],
)
def test_only_done_failed_and_cancelled_are_terminal(state: JobState, terminal: bool) -> None:
    assert state.terminal is terminal


def _corrupt(**changes: str | None) -> dict[str, str]:
    fields = FULL.encode()
    for key, value in changes.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    return fields


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_corrupt(id=None), id="no-id"),
        pytest.param(_corrupt(kind=None), id="no-kind"),
        pytest.param(_corrupt(state=None), id="no-state"),
        pytest.param(_corrupt(params=None), id="no-params"),
        pytest.param(_corrupt(submitted=None), id="no-submitted"),
        pytest.param(_corrupt(inputs=None), id="no-inputs"),
        pytest.param(_corrupt(state="exploded"), id="unknown-state"),
        pytest.param(_corrupt(params="{not json"), id="params-not-json"),
        pytest.param(_corrupt(submitted="yesterday"), id="submitted-not-a-number"),
        pytest.param(_corrupt(inputs="5"), id="inputs-a-number"),
        pytest.param(_corrupt(stages="7"), id="stages-a-number"),
        pytest.param(_corrupt(total="many"), id="total-not-a-number"),
        pytest.param(_corrupt(remaining=""), id="remaining-empty"),
        pytest.param(_corrupt(started="soon"), id="started-not-a-number"),
        pytest.param(_corrupt(error="{"), id="error-not-json"),
        pytest.param(_corrupt(v=str(FORMAT + 1)), id="newer-format"),
        pytest.param(_corrupt(v="one"), id="format-not-a-number"),
        pytest.param({}, id="empty-hash"),
        pytest.param({b"id": b"\xff\xfe", b"kind": b"map"}, id="not-utf8"),
    ],
)
def test_a_corrupt_job_record_is_a_decode_error(raw: dict[Any, Any]) -> None:
    with pytest.raises(DecodeError, match="corrupt job record"):
        JobRecord.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_corrupt(params='"a string"'), id="params-a-string"),
        pytest.param(_corrupt(params="[1, 2]"), id="params-a-list"),
        pytest.param(_corrupt(inputs='"ab"'), id="inputs-a-string"),
        pytest.param(_corrupt(stages='"main"'), id="stages-a-string"),
    ],
)
def test_a_job_record_field_of_the_wrong_json_type_is_a_decode_error(
        raw: dict[str, str]) -> None:
    with pytest.raises(DecodeError):
        JobRecord.decode(raw)


UNITS = [
    UnitRecord(index=0, slave="slave1", spec={"rows": [0, 10]}),
    UnitRecord(index=41, slave="gpu-box", spec={"items": [5, 9], "nested": {"x": [1.5, None]}},
               stage="second", attempts=3, meta={"moved_from": "slave2", "seed": 2**70}),
]


@pytest.mark.parametrize("unit", UNITS, ids=["defaults", "full"])
def test_a_unit_record_round_trips_as_str_and_as_bytes(unit: UnitRecord) -> None:
    encoded = unit.encode()
    assert UnitRecord.decode(encoded) == unit
    assert UnitRecord.decode(encoded.encode()) == unit


def test_a_unit_record_written_before_attempts_existed_decodes_with_zero_attempts() -> None:
    unit = UnitRecord.decode('{"i": 2, "s": "slave1", "spec": {"rows": [1, 2]}}')
    assert unit == UnitRecord(2, "slave1", {"rows": [1, 2]}, "main", 0, {})


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("not json", id="not-json"),
        pytest.param(b"\xff\xfe\xfd", id="not-utf8"),
        pytest.param("", id="empty"),
        pytest.param("null", id="null"),
        pytest.param("[]", id="a-list"),
        pytest.param("7", id="a-number"),
        pytest.param('{"s": "a", "spec": {}}', id="no-index"),
        pytest.param('{"i": 1, "spec": {}}', id="no-slave"),
        pytest.param('{"i": 1, "s": "a"}', id="no-spec"),
        pytest.param('{"i": "one", "s": "a", "spec": {}}', id="index-not-a-number"),
        pytest.param('{"i": 1, "s": "a", "spec": 5}', id="spec-a-number"),
        pytest.param('{"i": 1, "s": "a", "spec": "ab"}', id="spec-a-string"),
        pytest.param('{"i": 1, "s": "a", "spec": {}, "a": "x"}', id="attempts-not-a-number"),
        pytest.param('{"i": 1, "s": "a", "spec": {}, "m": 3}', id="meta-a-number"),
    ],
)
def test_a_corrupt_unit_record_is_a_decode_error(raw: str | bytes) -> None:
    with pytest.raises(DecodeError, match="corrupt unit record"):
        UnitRecord.decode(raw)
