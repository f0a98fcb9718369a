"""The examples in docs/protocol.md run as written, through the real protocol runner."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rqcluster.errors import ProcessorError
from rqcluster.processor import run_program, unit_environment

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def block(language: str) -> str:
    """The first fenced code block of ``language`` in the protocol document."""
    found = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"no ```{language} block in {DOC}"
    return found.group(1)


def test_the_shell_and_awk_example_doubles_numbers(tmp_path: Path) -> None:
    script = tmp_path / "double.sh"
    script.write_text(block("sh"))
    script.chmod(0o700)
    assert run_program([str(script)], [1, 2.5, -4, 0.1], {}, timeout=30) == [2, 5.0, -8, 0.2]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_the_c_example_samples_reproducibly_from_the_unit_seed(tmp_path: Path) -> None:
    (tmp_path / "sample.c").write_text(block("c"))
    subprocess.run(["cc", "-O2", "-o", str(tmp_path / "sample"), str(tmp_path / "sample.c")],
                   check=True)
    command = [str(tmp_path / "sample")]
    counts = [20_000, 0, 5]
    one = run_program(command, counts, unit_environment("j", 3, 2**62 + 5), timeout=30)
    again = run_program(command, counts, unit_environment("j", 3, 2**62 + 5), timeout=30)
    other = run_program(command, counts, unit_environment("j", 4, 99), timeout=30)
    assert one == again != other
    assert abs(4 * one[0] / counts[0] - 3.14159) < 0.05 and one[1] == 0 and one[2] <= 5
    with pytest.raises(ProcessorError, match='expected a count, got: "oops"'):
        run_program(command, ["oops"], unit_environment("j", 3, 1), timeout=30)


def test_the_python_example_holds() -> None:
    namespace: dict[str, object] = {}
    exec(block("python"), namespace)  # the block asserts its own answer
