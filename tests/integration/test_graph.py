"""Graph jobs on a real cluster: job files through the CLI, the examples as written,
cancel stopping running units, and a master-assign killed while a scheduler steers a job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rqcluster import Graph, Scheduler, keys
from rqcluster.models import JobState
from tests.helpers import wait_until
from tests.integration.harness import NodeCluster, clean_env, describe

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

STAGES_MODULE = '''\
def numbers(n):
    return list(range(n))

def square_all(values):
    return [v * v for v in values]

def total(*values):
    return sum(sum(v) if isinstance(v, list) else v for v in values)
'''


def test_a_job_file_runs_its_stages_in_order_through_the_cli(cluster: NodeCluster,
                                                             tmp_path: Path):
    name = f"stages_{tmp_path.name.replace('-', '_').lower()}"
    (tmp_path / f"{name}.py").write_text(STAGES_MODULE)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"description": "squares of 0..n, summed", "stages": [
        {"name": "make", "task": f"{name}:numbers", "args": [[3], [4], [5]]},
        {"name": "square", "task": f"{name}:square_all", "after": ["make[i]"]},
        {"name": "sum", "task": f"{name}:total", "after": ["square"]}]}))
    proc = cluster.cli("enqueue", "graph", str(job_file), "--wait", "--json", cwd="/")
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout)
    expected = sum(v * v for n in (3, 4, 5) for v in range(n))
    assert out["result"] == expected and out["state"] == "done", out


def test_a_stage_can_be_a_program_in_another_language(cluster: NodeCluster, tmp_path: Path):
    name = f"stages_{tmp_path.name.replace('-', '_').lower()}"
    (tmp_path / f"{name}.py").write_text(STAGES_MODULE)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"seed": 5, "stages": [
        {"name": "double", "task": "exec:awk '{print $1 * 2}'", "args": [[1], [2], [3]]},
        {"name": "sum", "task": f"{name}:total", "after": ["double"]}]}))
    proc = cluster.cli("enqueue", "graph", str(job_file), "--wait", "--json", cwd="/")
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout)
    assert out["result"] == 12 and out["seed"] == 5, out


def test_a_bad_job_file_exits_2_and_writes_nothing(cluster: NodeCluster, tmp_path: Path):
    before = cluster.conn.zcard(keys.JOBS_INDEX)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"stages": [{"name": "a", "task": "exec:true"},
                                               {"name": "b", "task": "exec:true",
                                                "after": ["nope"]}]}))
    proc = cluster.cli("enqueue", "graph", str(job_file))
    assert proc.returncode == 2, describe(proc)
    assert "not an earlier stage" in proc.stderr
    assert cluster.conn.zcard(keys.JOBS_INDEX) == before


def sleep_forever(x):
    import time
    time.sleep(3600)
    return x


def test_cancel_stops_a_running_unit_within_seconds(cluster: NodeCluster):
    job = cluster.api.submit("map", function=sleep_forever, items=range(2))
    wait_until(lambda: any(m.decode().startswith(f"{job.id}:")
                           for m in cluster.conn.hkeys(keys.RUNNING)), 30,
               message="no unit of the job started")
    cancelled_at = time.monotonic()
    proc = cluster.cli("cancel", job.id)
    assert proc.returncode == 0, describe(proc)

    def stopped() -> bool:
        workers = [json.loads(raw) for raw in cluster.conn.mget(
            [keys.worker(k.decode().removeprefix("rqc:worker:"))
             for k in cluster.conn.keys("rqc:worker:*")]) if raw]
        running = [m for m in cluster.conn.hkeys(keys.RUNNING)
                   if m.decode().startswith(f"{job.id}:")]
        return not running and not any((w.get("unit") or "").startswith(f"{job.id}:")
                                       for w in workers)

    wait_until(stopped, 15, message="the cancelled job's units still run")  # (not in 3600 s)
    took = time.monotonic() - cancelled_at
    assert job.status().record.state is JobState.CANCELLED
    print(f"cancel -> units stopped in {took:.2f} s")
    # the slaves are free again: a new job runs
    assert cluster.api.submit("montecarlo", samples=1000).result(timeout=60) > 2


def run_example(cluster: NodeCluster, name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "-c",
                           str(cluster.config_path), *args],
                          capture_output=True, text=True, timeout=180, cwd="/",
                          env=clean_env())
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def units_line(out: str) -> tuple[int, int, int]:
    line = next(x for x in out.splitlines() if x.startswith("units:"))
    words = line.replace(",", "").split()
    return int(words[1]), int(words[3]), int(words[5])


def test_example_search_kills_its_siblings_at_the_first_hit(cluster: NodeCluster):
    out = run_example(cluster, "search.py", "--secret", "1234567")
    assert "found: 1234567" in out, out
    ran, killed, started = units_line(out)
    assert started == 8 and killed >= 1 and ran + killed == started, out


def test_example_montecarlo_is_the_seed_s_11_samplers_and_a_merge(cluster: NodeCluster):
    out = run_example(cluster, "montecarlo.py", "--seed", "4")
    pi = float(next(x for x in out.splitlines() if x.startswith("pi:")).split()[1])
    assert abs(pi - 3.14159) < 0.01, out
    assert units_line(out) == (12, 0, 12), out
    assert run_example(cluster, "montecarlo.py", "--seed", "4").splitlines()[0] == \
        out.splitlines()[0]  # the same seed, the same estimate, bit for bit


def test_example_montecarlo_until_stops_once_precise_enough(cluster: NodeCluster):
    out = run_example(cluster, "montecarlo_until.py", "--target", "0.0006", "--seed", "9")
    estimate = json.loads(next(x for x in out.splitlines()
                               if x.startswith("estimate:"))[len("estimate:"):]
                          .replace("'", '"'))
    assert estimate["standard_error"] < 0.0006 and abs(estimate["pi"] - 3.14159) < 0.005
    ran, killed, started = units_line(out)
    assert killed >= 1 and ran + killed == started and started < 200, out


class Chain(Scheduler):
    """Starts one unit after another (each adds one), up to a number of links."""

    links = 12

    def init(self, seed):
        self.seen = []
        self.start_unit("step", 0)

    def unit_done(self, unit, value):
        self.seen.append(unit)
        if len(self.seen) == self.links:
            self.finish({"value": value, "units": sorted(self.seen)})
        else:
            self.start_unit("step", value)


class Stepper:
    def step(self, value):
        import time
        time.sleep(0.4)
        return value + 1


def test_a_master_assign_killed_mid_hook_job_neither_loses_nor_repeats_an_event(
        make_cluster: Callable[..., NodeCluster]):
    c = make_cluster(options={"heartbeat-ttl": 2})
    c.start_standard()
    job = c.api.submit("graph", graph=Graph(node=Stepper), scheduler=Chain)
    wait_until(lambda: (job.status().record.total or 0) >= 4, 60,
               message="the chain did not get going")
    os.killpg(c.procs["master"].pid, signal.SIGKILL)
    c.procs["master"].wait(timeout=10)
    wait_until(lambda: c.conn.xlen(keys.SCHEDULE_STREAM) > 0, 30,  # a unit completed
               message="no completion was announced while master-assign was down")
    c.spawn("assign-reduce", "master", key="master-2")
    result = job.result(timeout=120)
    assert result == {"value": Chain.links, "units": list(range(Chain.links))}
    record = job.status().record
    assert record.total == Chain.links and record.state is JobState.DONE
