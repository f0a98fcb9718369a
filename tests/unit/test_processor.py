"""The JSON-lines protocol runner, driven with real programs that are not Python (sh, awk).

Each failure a program can commit (non-zero exit, wrong line count, a line that is not
JSON, running too long, not existing) is a ProcessorError that says what happened and
carries the end of the program's stderr.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rqcluster import processor
from rqcluster.errors import InputError, ProcessorError
from rqcluster.kinds import KINDS, Program
from rqcluster.processor import prepare_program, program_command, run_program

# Doubles each number: one output line per input line, as the protocol asks.
DOUBLE = ["awk", "{ print 2 * $0; fflush() }"]


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_a_program_answers_one_json_line_per_item_in_order() -> None:
    assert run_program(DOUBLE, [1, 2, 3, -7], {}, timeout=30) == [2, 4, 6, -14]


def test_items_of_any_json_shape_and_numpy_values_cross_as_json_lines() -> None:
    items = [{"a": [1, "é"]}, None, np.int64(5), np.arange(3), 2.5]
    assert run_program(["cat"], items, {}, timeout=30) == [
        {"a": [1, "é"]}, None, 5, [0, 1, 2], 2.5]


def test_a_big_unit_streams_both_ways_without_deadlock() -> None:
    # ~2 MB each way: far past what a pipe buffers, so a writer that wrote everything
    # before reading anything would block forever against cat.
    items = [{"i": i, "pad": "x" * 20} for i in range(60_000)]
    assert run_program(["cat"], items, {}, timeout=120) == items


def test_the_unit_s_variables_are_in_the_environment_and_the_secret_is_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RQCLUSTER_SECRET", "s" * 32)
    monkeypatch.setenv("KEPT_VARIABLE", "kept")
    env = processor.unit_environment("job9", 4, 12345)
    script = ('read x; printf \'["%s","%s","%s","%s","%s"]\\n\' "$RQCLUSTER_SEED" '
              '"$RQCLUSTER_JOB" "$RQCLUSTER_UNIT" "${RQCLUSTER_SECRET:-none}" "$KEPT_VARIABLE"')
    assert run_program(sh(script), [0], env, timeout=30) == [
        ["12345", "job9", "4", "none", "kept"]]


FAILURES = [
    pytest.param(sh("cat >/dev/null; echo 'cannot open model.dat' >&2; exit 3"),
                 ["exited with status 3", "cannot open model.dat"], id="non-zero-exit"),
    pytest.param(sh("cat >/dev/null; echo 1; echo 'only one' >&2"),
                 ["wrote 1 lines for 3 items", "only one"], id="too-few-lines"),
    pytest.param(sh("cat; echo 4"), ["wrote 4 lines for 3 items"], id="too-many-lines"),
    pytest.param(sh("read a; echo 1; echo 'oops not json'; cat >/dev/null"),
                 ["output line 2 is not valid JSON", "oops not json"], id="invalid-json"),
    pytest.param(sh("kill -SEGV $$"), ["killed by SIGSEGV"], id="crash"),
    pytest.param(["no-such-program-rqcluster"], ["'no-such-program-rqcluster' not found"],
                 id="missing-program"),
]


@pytest.mark.parametrize(("command", "fragments"), FAILURES)
def test_a_program_that_breaks_the_protocol_is_a_clear_error(command: list[str],
                                                             fragments: list[str]) -> None:
    with pytest.raises(ProcessorError) as info:
        run_program(command, [1, 2, 3], {}, timeout=30)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_a_program_past_its_timeout_is_killed_with_its_children() -> None:
    with pytest.raises(ProcessorError) as info:
        run_program(sh("echo 'warming up' >&2; sleep 60 & wait"), [1], {}, timeout=2)
    assert "ran past its timeout of 2 s" in str(info.value)
    assert "warming up" in str(info.value)


def test_only_the_end_of_a_flood_of_stderr_is_kept() -> None:
    script = "cat >/dev/null; head -c 3000000 /dev/zero | tr '\\0' 'e' >&2; echo END >&2; exit 1"
    with pytest.raises(ProcessorError) as info:
        run_program(sh(script), [1], {}, timeout=60)
    message = str(info.value)
    assert message.rstrip().endswith("END")
    assert len(message) < processor.STDERR_TAIL_BYTES + 200


def test_an_item_that_is_not_json_is_refused_before_the_program_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ProcessorError, match="item 1 .* JSON"):
        run_program(sh(f"touch {marker}"), [1, float("nan")], {}, timeout=30)
    assert not marker.exists()


# --- what is shipped -----------------------------------------------------------------------

def test_a_bare_command_runs_from_the_slave_s_path_and_a_path_is_shipped(tmp_path: Path) -> None:
    assert prepare_program("awk -f 'my prog.awk'").spec == {
        "argv": ["awk", "-f", "my prog.awk"], "shipped": False, "name": "awk"}
    script = tmp_path / "score.sh"
    script.write_bytes(b"#!/bin/sh\ncat\n")
    shipped = prepare_program([str(script), "--fast"])
    assert shipped.spec == {"argv": ["score.sh", "--fast"], "shipped": True, "name": "score.sh"}
    assert shipped.script == b"#!/bin/sh\ncat\n"


@pytest.mark.parametrize(("program", "fragment"), [
    ("./missing.sh", "file not found"),
    ("", "empty"),
    ("awk 'unclosed", "cannot split"),
    ("./notes.txt", "no '#!' line"),
    ("./sub", "not a file"),
])
def test_a_program_that_cannot_run_is_refused_at_submit(program: str, fragment: str,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("just text\n")
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match=fragment):
        prepare_program(program, "map: program")


def test_a_shipped_program_is_written_private_and_removed_after_the_run() -> None:
    spec = {"argv": ["score.sh", "7"], "shipped": True, "name": "score.sh"}
    with program_command(spec, lambda: b"#!/bin/sh\nread x; echo \"$1\"\n") as (argv, workdir):
        path = Path(argv[0])
        assert path.parent == workdir and path.name == "score.sh" and argv[1:] == ["7"]
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert run_program(argv, ["x"], {}, timeout=30, cwd=workdir) == [7]
    assert not workdir.exists()


def test_a_shipped_program_that_fails_verification_is_never_written(tmp_path: Path) -> None:
    def refuse() -> bytes:
        raise ProcessorError("bad signature")

    spec = {"argv": ["score.sh"], "shipped": True, "name": "score.sh"}
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(ProcessorError, match="bad signature"), program_command(spec, refuse):
        pytest.fail("the body must not run")
    after = set(os.listdir(tempfile.gettempdir()))
    assert not {n for n in after - before if n.startswith("rqcluster-unit-")}


# --- the map kind's program parameters -------------------------------------------------------

def test_map_ships_a_program_file_and_bounds_its_timeout_by_the_unit_timeout(
        tmp_path: Path) -> None:
    script = tmp_path / "score.sh"
    script.write_bytes(b"#!/bin/sh\ncat\n")
    kind = KINDS["map"]
    prepared = kind.prepare(program=str(script), items=[1, 2], unit_timeout=100)
    assert prepared.params["program"]["shipped"] is True
    assert prepared.params["timeout"] == 90.0
    shipped = prepared.inputs[processor.PROGRAM_INPUT]
    assert isinstance(shipped, Program) and shipped.blob == b"#!/bin/sh\ncat\n"
    assert "function" not in prepared.inputs
    bare = kind.prepare(program="cat", items=[1], timeout=5, unit_timeout=100)
    assert bare.params["timeout"] == 5.0 and not bare.inputs.get(processor.PROGRAM_INPUT)


@pytest.mark.parametrize(("params", "fragment"), [
    ({"function": abs, "program": "cat"}, "not both"),
    ({}, "function is required (or a program"),
    ({"function": abs, "timeout": 5}, "timeout applies to a program"),
    ({"program": "cat", "timeout": 0}, "timeout must be"),
    ({"program": "cat", "timeout": 200, "unit_timeout": 100}, "unit-timeout"),
])
def test_map_refuses_a_bad_program_request(params: dict[str, object], fragment: str) -> None:
    with pytest.raises(InputError) as info:
        KINDS["map"].prepare(items=[1], **params)
    assert fragment in str(info.value)
