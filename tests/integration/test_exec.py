"""Processors in any language on a real cluster: an awk script shipped with the job, a C
program built here with cc, a command the slaves have; and every way a program can fail
the protocol ends its job failed with a message that says why.

The slaves run in a directory of their own: a shipped program reaches them only through
Redis, signed, and is written to a private file before it runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rqcluster import JobFailed, keys, seeding
from tests.integration.harness import NodeCluster, describe

pytestmark = pytest.mark.integration

TIMEOUT = 60

# Sums each row ([1,2,3], as .npy rows are written) and tags it with its unit and seed.
# awk's numbers are doubles, so the 63-bit seed goes back as a string.
ROWSUM = r"""#!/bin/sh
# rqcluster processor: one JSON list per line in, [sum, unit, "seed"] per line out.
exec awk '{
  gsub(/[][ ]/, "")
  n = split($0, v, ",")
  s = 0
  for (i = 1; i <= n; i++) s += v[i]
  printf "[%d,%s,\"%s\"]\n", s, ENVIRON["RQCLUSTER_UNIT"], ENVIRON["RQCLUSTER_SEED"]
  fflush()
}'
"""

SQUARE_C = r"""
#include <stdio.h>
#include <stdlib.h>

/* rqcluster processor: one integer per line in, x*x + 1 per line out. */
int main(void) {
    char line[64];
    if (getenv("RQCLUSTER_SEED") == NULL) {
        fprintf(stderr, "RQCLUSTER_SEED is not set\n");
        return 2;
    }
    while (fgets(line, sizeof line, stdin) != NULL) {
        long long x = strtoll(line, NULL, 10);
        printf("%lld\n", x * x + 1);
    }
    return 0;
}
"""


def _jobs_in_redis(cluster: NodeCluster) -> set[str]:
    """The ids of the jobs that have any key in Redis (earlier tests' jobs may lose keys
    meanwhile, as they finish and are released; a new id means something was written)."""
    return {k.decode().split("{", 1)[1].split("}", 1)[0]
            for k in cluster.conn.scan_iter(match=f"{keys.PREFIX}:job:*", count=1000)}


def test_a_shipped_awk_script_maps_npy_rows_with_each_unit_s_seed(cluster: NodeCluster,
                                                                  tmp_path: Path) -> None:
    script = tmp_path / "rowsum.sh"
    script.write_text(ROWSUM)
    script.chmod(0o755)
    rows = np.arange(150 * 4, dtype=np.int64).reshape(150, 4) - 300
    np.save(tmp_path / "rows.npy", rows)

    done = cluster.cli("enqueue", "map", "--exec", "./rowsum.sh", "rows.npy", "--seed", "77",
                       "--wait", "--json", cwd=tmp_path)

    assert done.returncode == 0, describe(done)
    out = json.loads(done.stdout)
    assert out["seed"] == 77
    assert [r[0] for r in out["result"]] == rows.sum(axis=1).tolist()
    # Unit i ran on items [lo, hi) of the input, in order, with unit_seed(77, i).
    tags = [tuple(r[1:]) for r in out["result"]]
    assert len(set(tags)) > 1
    assert [t[0] for t in tags] == sorted(t[0] for t in tags)
    for unit, seed in set(tags):
        assert seed == str(seeding.unit_seed(77, unit))
    shown = cluster.cli("status", out["job"])
    assert "seed       77" in shown.stdout, describe(shown)
    assert json.loads(cluster.cli("status", out["job"], "--json").stdout)["seed"] == 77


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_a_c_program_built_here_is_shipped_and_maps_a_range(cluster: NodeCluster,
                                                            tmp_path: Path) -> None:
    source = tmp_path / "square.c"
    source.write_text(SQUARE_C)
    binary = tmp_path / "square"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)

    job = cluster.api.submit("map", program=str(binary), items=range(-500, 1500),
                             reduce="sum")

    assert job.result(timeout=TIMEOUT) == sum(x * x + 1 for x in range(-500, 1500))


def test_a_command_the_slaves_have_maps_a_jsonl_file(cluster: NodeCluster,
                                                     tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text("".join(f"{i}\n" for i in range(40)))
    done = cluster.cli("enqueue", "map", "--exec", "awk '{ print 3 * $0; fflush() }'",
                       "items.jsonl", "--reduce", "sum", "--wait", cwd=tmp_path)
    assert done.returncode == 0, describe(done)
    assert done.stdout.strip() == str(3 * sum(range(40)))


FAILURES = [
    pytest.param(["sh", "-c", "cat >/dev/null; echo 'model.dat: no such file' >&2; exit 4"],
                 {}, ["exited with status 4", "model.dat: no such file"], id="non-zero-exit"),
    pytest.param(["sh", "-c", "read x; echo 1"], {}, ["wrote 1 lines for"],
                 id="wrong-line-count"),
    pytest.param(["sh", "-c", "while read x; do echo \"value $x\"; done"], {},
                 ["output line 1 is not valid JSON", "value"], id="invalid-json"),
    pytest.param(["sh", "-c", "echo 'thinking' >&2; sleep 60"], {"timeout": 2},
                 ["ran past its timeout of 2 s", "thinking"], id="timeout"),
    pytest.param(["no-such-program-rqcluster", "--fast"], {},
                 ["'no-such-program-rqcluster' not found on this slave"], id="missing-program"),
]


@pytest.mark.parametrize(("program", "extra", "fragments"), FAILURES)
def test_a_program_that_fails_fails_its_job_with_a_clear_message(
        cluster: NodeCluster, program: list[str], extra: dict[str, float],
        fragments: list[str]) -> None:
    job = cluster.api.submit("map", program=program, items=range(30), **extra)
    with pytest.raises(JobFailed) as info:
        job.result(timeout=TIMEOUT)
    message = str(info.value)
    assert "failed: unit" in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(("args", "fragment"), [
    (["--exec", "./missing.sh", "items.jsonl"], "file not found: missing.sh"),
    (["mod:fn", "items.jsonl", "--exec", "./square.sh"], "not both"),
    (["--exec", "cat"], "missing argument INPUT"),
    (["mod:fn", "items.jsonl", "--exec-timeout", "5"], "--exec-timeout goes with --exec"),
    (["--exec", "cat", "items.jsonl", "--exec-timeout", "99999"], "timeout must be"),
    (["--exec", "./notes.txt", "items.jsonl"], "no '#!' line"),
])
def test_bad_exec_input_exits_2_and_writes_nothing(cluster: NodeCluster, tmp_path: Path,
                                                   args: list[str], fragment: str) -> None:
    (tmp_path / "items.jsonl").write_text("1\n2\n")
    (tmp_path / "square.sh").write_text("#!/bin/sh\ncat\n")
    (tmp_path / "notes.txt").write_text("not a program\n")
    before = _jobs_in_redis(cluster)
    done = cluster.cli("enqueue", "map", *args, cwd=tmp_path)
    assert done.returncode == 2, describe(done)
    assert fragment in done.stderr, describe(done)
    assert _jobs_in_redis(cluster) <= before
