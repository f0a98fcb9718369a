"""The benchmark harness runs end to end at its smallest sizes (no timing is asserted:
timings belong to the benchmark's own report, never to pass/fail)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import clean_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_the_quick_benchmark_runs_every_workload_and_study_with_right_answers(
        tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--repeat", "1", "--systems",
         "rqcluster", "--only", "matmul,montecarlo,noop,map,sleep32,memory,profile",
         "--out", str(out)],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    runs = {(r["workload"], r["system"]): r for r in report["results"]}
    for workload in ("matmul", "montecarlo", "noop", "map", "sleep32"):
        mine = runs[(workload, "rqcluster")]
        assert mine["error"] is None, mine
        assert len(mine["times"]) == 1
    # Answers were checked against the reference system (numpy / plain Python).
    assert runs[("map", "python")]["answer"] == runs[("map", "rqcluster")]["answer"]
    assert runs[("montecarlo", "numpy")]["answer"] == runs[("montecarlo", "rqcluster")]["answer"]
    assert {t["verdict"] for t in report["targets"]} <= {"PASS", "MISS", "n/a"}
    assert report["environment"]["blas env"] is not None
    assert report["memory"]["correct rows"] is True
    assert {row["process"] for row in report["memory"]["rows"]} >= {"redis-server", "master"}
    assert report["profile"]["commands per unit: slave"]
    assert (out / "results.md").read_text().startswith("| workload")
