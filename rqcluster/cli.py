"""The ``rqcluster`` command line: parse, call one library function, print.

Every error the library raises on purpose becomes one line on stderr and the exit status
its class names (2 bad usage/config/input, 1 job failed, 3 timed out), here and only here.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import redis

from rqcluster import jobs, liveness
from rqcluster.config import ClusterConfig, config_path, load_config
from rqcluster.connection import connect
from rqcluster.errors import InputError, RQClusterError, SlaveWaitTimeout
from rqcluster.functions import import_function
from rqcluster.jobs import JobStatus
from rqcluster.models import JobRecord, JobState
from rqcluster.npyfile import check_output
from rqcluster.progress import ProgressReporter
from rqcluster.secret import cluster_key
from rqcluster.secret import source as secret_source

SMALL_ARRAY = 10_000


class CliContext:
    """Shared state of one invocation: the config path, loaded and connected lazily."""

    def __init__(self, path: str | None) -> None:
        self.path = config_path(path)
        self._config: ClusterConfig | None = None
        self._conn: redis.Redis | None = None

    @property
    def config(self) -> ClusterConfig:
        if self._config is None:
            self._config = load_config(self.path)
        return self._config

    @property
    def conn(self) -> redis.Redis:
        if self._conn is None:
            self._conn = connect(self.config.redis)
        return self._conn


pass_ctx = click.make_pass_decorator(CliContext)


class RQClusterGroup(click.Group):
    """A click group that turns rqcluster's errors into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RQClusterError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except redis.ConnectionError as e:
            click.echo(f"error: lost the connection to Redis: {e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=RQClusterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config", envvar="RQCLUSTER_CONFIG", metavar="PATH",
              help="Cluster config file [env RQCLUSTER_CONFIG; default config/local.json].")
@click.option("-v", "--verbose", is_flag=True, help="Log what the nodes and jobs do.")
@click.version_option(package_name="rqcluster")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """rqcluster: spread numpy-sized work over the machines you have, through Redis.

    \b
    A master splits each job into units, puts them on per-slave RQ queues sized by each
    slave's performance, slaves run plain `rq worker`, and a combiner folds the partials.
    Quick start:  rqcluster demo
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx.obj = CliContext(config)


# --- config, broker, nodes -----------------------------------------------------------------

@cli.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-redis", is_flag=True,
              help="Only validate the file; do not contact Redis to check it is safe.")
@pass_ctx
def check_config(ctx: CliContext, as_json: bool, no_redis: bool) -> None:
    """Validate the config and summarise the cluster it describes; if its Redis is
    reachable, check that it is safe (a password off loopback, noeviction, appendonly)
    and exit 2 if it is not."""
    cfg = ctx.config
    summary: dict[str, Any] = {
        "config": str(cfg.path),
        "master-assign": vars(cfg.master_assign), "master-combine": vars(cfg.master_combine),
        "slaves": [{"name": s.name, "ip": s.ip, "performance": s.performance,
                    "share": round(s.performance / sum(x.performance for x in cfg.slaves), 4)}
                   for s in cfg.slaves],
        "redis": {"url": cfg.redis.url, "loopback": cfg.redis.is_loopback(),
                  "password": cfg.redis.password_source()},
        "options": {k.replace("_", "-"): v for k, v in vars(cfg.options).items()},
        "security": {"secret": secret_source(cfg),
                     "max-payload-bytes": cfg.security.max_payload_bytes},
    }
    reachable, problems = (None, []) if no_redis else _redis_problems(cfg)
    summary["redis"]["checked"] = reachable is True
    summary["redis"]["problems"] = problems
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        if problems:
            sys.exit(2)
        return
    click.echo(f"{cfg.path}: OK")
    click.echo(f"  master-assign   {cfg.master_assign.name} ({cfg.master_assign.ip})")
    click.echo(f"  master-combine  {cfg.master_combine.name} ({cfg.master_combine.ip})")
    click.echo(f"  slaves          {len(cfg.slaves)}")
    total = sum(s.performance for s in cfg.slaves)
    for s in cfg.slaves:
        perf = "auto (1 until measured)" if s.auto else f"{s.performance:g}"
        click.echo(f"    {s.name:<16} {s.ip:<15} performance {perf} "
                   f"({100 * s.performance / total:.0f}% of each job)")
    click.echo(f"  redis           {cfg.redis.url} (password: {cfg.redis.password_source()})")
    click.echo(f"  secret          {secret_source(cfg)}")
    if reachable is None:
        click.echo("  redis checks    not run (--no-redis)")
    elif isinstance(reachable, str):
        click.echo(f"  redis checks    not run ({reachable})")
    elif not problems:
        click.echo("  redis checks    ok (authentication, noeviction, appendonly)")
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        sys.exit(2)


def _redis_problems(cfg: ClusterConfig) -> tuple[bool | str, list[str]]:
    """(True or why not checked, problems) of the config's Redis; an unreachable one is
    not a problem of the config (the broker may not be started yet)."""
    from rqcluster.safety import check_redis
    try:
        conn = connect(cfg.redis)
    except RQClusterError as e:
        return f"cannot connect: {e}", []
    try:
        return True, check_redis(conn, cfg.redis)
    finally:
        conn.close()


@cli.command()
@click.option("--dir", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory for the AOF [default: per port under ~/.local/share].")
@pass_ctx
def broker(ctx: CliContext, data_dir: Path | None) -> None:
    """Run the embedded redis-server for the config's (loopback) Redis URL, in the
    foreground, with AOF on. Stops cleanly on Ctrl-C or SIGTERM."""
    from rqcluster.broker import run_foreground
    cfg = ctx.config
    click.echo(f"broker: redis-server for {cfg.redis.url} (Ctrl-C to stop)", err=True)
    sys.exit(run_foreground(cfg.redis.url, data_dir, cfg.redis.password()))


@cli.command()
@click.option("--mode", required=True, type=click.Choice(["assign-reduce", "assign", "reduce",
                                                          "slave"]),
              help="assign-reduce: split and combine; assign / reduce: one of the two; "
                   "slave: run `rq worker` on this slave's queue.")
@click.option("--name", envvar="RQCLUSTER_NODE",
              help="This node's name in the config [env RQCLUSTER_NODE; default: the node "
                   "matching this host].")
@click.option("--allow-unsafe-redis", is_flag=True,
              help="Start even if Redis has no password on a non-loopback address, may "
                   "evict keys, or has persistence off (each is logged as a warning).")
@click.option("--performance", type=float, metavar="NUMBER",
              help="For a slave not in the config that joins at run time (the config "
                   "must set options.allow-join): its relative performance [default 1].")
@pass_ctx
def node(ctx: CliContext, mode: str, name: str | None, allow_unsafe_redis: bool,
         performance: float | None) -> None:
    """Run this machine's node in one of the four modes, until Ctrl-C or SIGTERM."""
    from rqcluster.connection import wait_for_broker
    from rqcluster.membership import check_join
    from rqcluster.node import check_mode, run_node
    from rqcluster.safety import ALLOW_ENV, refuse_unsafe
    cfg = ctx.config
    logging.getLogger().setLevel(logging.INFO)
    joining = check_join(cfg, mode, name, performance)  # refused before Redis is needed
    me = name if joining and name else cfg.this_node(name)
    if not joining:
        check_mode(cfg, mode, me)  # a wrong mode is refused before Redis is needed
    cluster_key(cfg)  # no usable secret: refuse before anything starts
    log = logging.getLogger("rqcluster.node")
    conn = wait_for_broker(cfg.redis, on_wait=log.info)
    refuse_unsafe(conn, cfg.redis, allow_unsafe_redis, warn=log.warning)
    conn.close()
    if allow_unsafe_redis:
        os.environ[ALLOW_ENV] = "1"  # a slave's `rq worker` checks again; it inherits this
    sys.exit(run_node(cfg, mode, me, performance))


@cli.command()
@click.argument("slave")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def drain(ctx: CliContext, slave: str, as_json: bool) -> None:
    """Take SLAVE out of the cluster gracefully: nothing new is placed on it, its queued
    units move to other slaves, the unit it runs finishes, then it stops (its node exits
    0). `rqcluster watch` shows it draining, then gone. Starting it again undoes this."""
    from rqcluster.membership import drain as start_drain
    info = start_drain(ctx.conn, ctx.config, slave)
    if as_json:
        click.echo(json.dumps(info))
        return
    if info["alive"]:
        click.echo(f"draining slave {slave}: {info['held']} unit(s) to move or finish; it "
                   "stops when it holds none")
    else:
        click.echo(f"slave {slave} is not running; it stays drained (no units are placed "
                   "on it) until it is started again")


@cli.command()
@click.option("--write", is_flag=True,
              help="Store the values in the config file (other content kept; the file is "
                   "replaced atomically). Slaves that joined at run time are not in it.")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True,
              metavar="SECONDS", help="Give up waiting for the benchmark units (exit 3).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def calibrate(ctx: CliContext, write: bool, timeout: float, as_json: bool) -> None:
    """Run a short fixed benchmark unit on every live slave and print each one's
    performance relative to the slowest (1.0); --write stores them in the config."""
    from rqcluster import calibrate as calib
    found = calib.run(ctx.conn, ctx.config, timeout)
    written = calib.write_config(ctx.path, found.performance) if write else []
    if as_json:
        click.echo(json.dumps({"performance": found.performance, "seconds": found.seconds,
                               "written": written}))
        return
    for name, perf in found.performance.items():
        click.echo(f"{name:<16} {perf:6.2f}   ({found.seconds[name]:.3f} s)")
    if write:
        click.echo(f"wrote the performance of {', '.join(written) or 'no slave'} to "
                   f"{ctx.path}", err=True)


# --- jobs -----------------------------------------------------------------------------------

def wait_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every `enqueue KIND` shares, added once."""
    f = click.option("--seed", type=int, metavar="N",
                     help="The job seed every unit's random stream derives from (default: "
                          "random; shown by status and --json).")(f)
    f = click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
                     help="With --wait: give up waiting after this long (exit 3; the job "
                          "goes on).")(f)
    f = click.option("--json", "as_json", is_flag=True,
                     help="Print the outcome as one JSON document.")(f)
    f = click.option("--wait", is_flag=True,
                     help="Wait for the result (progress on stderr) instead of printing "
                          "the job id.")(f)
    f = click.option("--wait-for-slaves", type=click.FloatRange(min=0), metavar="SECONDS",
                     default=0, show_default=True,
                     help="If no slave is live, wait this long for one before submitting; "
                          "none by then refuses the job (exit 3). Without it, the job is "
                          "submitted with a warning and waits for a slave.")(f)
    return f


@cli.group()
def enqueue() -> None:
    """Submit a job. Prints the job id; with --wait, the result.

    \b
    Examples:
      rqcluster enqueue matmul A.npy B.npy -o C.npy
      rqcluster enqueue montecarlo --samples 100000000 --seed 1 --wait
      rqcluster enqueue map mymod:score items.jsonl --reduce sum --wait --json
      rqcluster enqueue map --exec ./score.sh items.jsonl --reduce sum --wait
      rqcluster enqueue graph job.json --wait
    Exit status: 0 done, 1 the job failed, 2 bad input (nothing written), 3 timed out.
    """


@enqueue.command("matmul")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write C to this .npy file (implies --wait).")
@wait_options
@pass_ctx
def enqueue_matmul(ctx: CliContext, a: Path, b: Path, output: Path | None, **wait: Any) -> None:
    """C = A @ B for two .npy files, split into row blocks of A."""
    _check_output(output)
    _submit_and_report(ctx, "matmul", {"a": a, "b": b}, output, **wait)


@enqueue.command("montecarlo")
@click.option("--samples", required=True, type=int, metavar="N", help="Random points to draw.")
@click.option("--unit-samples", type=int, metavar="N",
              help="Points per unit (default 4,194,304; independent of the cluster).")
@wait_options
@pass_ctx
def enqueue_montecarlo(ctx: CliContext, samples: int, unit_samples: int | None,
                       **wait: Any) -> None:
    """Estimate pi from N random points; the same --seed gives the same answer anywhere."""
    _submit_and_report(ctx, "montecarlo", {"samples": samples, "unit_samples": unit_samples},
                       None, **wait)


@enqueue.command("map")
@click.argument("args", nargs=-1, metavar="[MODULE:FUNCTION] INPUT")
@click.option("--exec", "program", metavar="PROGRAM",
              help="Run PROGRAM (any language) once per unit instead of a function: items "
                   "as JSON lines on its stdin, one JSON line per item on its stdout "
                   "(docs/protocol.md). A path (./score.sh) is shipped with the job, signed; "
                   "a bare command (awk ...) must exist on the slaves.")
@click.option("--exec-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="With --exec: kill the program after this long and fail the job "
                   "[default: 90% of the cluster's unit-timeout].")
@click.option("--reduce", "reduce_", default="list", show_default=True,
              metavar="sum|list|MODULE:FUNCTION", help="How to combine the results.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an array result to this .npy file (implies --wait).")
@wait_options
@pass_ctx
def enqueue_map(ctx: CliContext, args: tuple[str, ...], program: str | None,
                exec_timeout: float | None, reduce_: str, output: Path | None,
                **wait: Any) -> None:
    """Apply MODULE:FUNCTION (or, with --exec, a program) to every item of INPUT
    (.jsonl lines or .npy rows).

    The function is shipped by value: slaves need none of your code installed."""
    _check_output(output)
    what: dict[str, Any]
    if program is not None:
        if len(args) != 1:
            raise click.UsageError("give MODULE:FUNCTION or --exec PROGRAM, not both"
                                   if len(args) > 1 else "missing argument INPUT")
        what = {"program": program, "timeout": exec_timeout}
    elif len(args) != 2:
        raise click.UsageError("expected MODULE:FUNCTION INPUT (or --exec PROGRAM INPUT)")
    elif exec_timeout is not None:
        raise click.UsageError("--exec-timeout goes with --exec only")
    else:
        what = {"function": args[0]}
    _submit_and_report(ctx, "map", {**what, "items": Path(args[-1]), "reduce": reduce_},
                       output, **wait)


@enqueue.command("graph")
@click.argument("job_file", metavar="JOB.json", type=click.Path(path_type=Path))
@wait_options
@pass_ctx
def enqueue_graph(ctx: CliContext, job_file: Path, **wait: Any) -> None:
    """Run a multi-stage job described by a JSON job file.

    \b
    {"node": "mymod:MyNode",
     "scheduler": "mymod:MyScheduler",
     "seed": 1,
     "stages": [{"name": "sample", "task": "draw", "count": 11},
                {"name": "merge", "task": "merge", "after": ["sample"]}]}

    A unit runs its task on the results of the units it names in "after" (a
    stage: all its units; "stage[3]": one unit; "stage[i]": the unit at the same
    position), then its "args". Tasks are node methods, MODULE:FUNCTION, or
    exec:PROGRAM (docs/protocol.md; list in "programs" those only a scheduler
    starts). Modules are found next to the job file. The result is the result
    of the last units (one value, or a list)."""
    from rqcluster.graph import load_job_file
    folder = str(job_file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    parsed = load_job_file(job_file, import_function)
    params: dict[str, Any] = {"graph": parsed.graph, "description": parsed.description,
                              "programs": parsed.programs}
    if parsed.scheduler:
        params["scheduler"] = import_function(parsed.scheduler, "graph scheduler")
    if wait["seed"] is None:  # --seed wins over the file's
        wait["seed"] = parsed.seed
    _submit_and_report(ctx, "graph", params, None, **wait)


def _check_output(output: Path | None) -> None:
    if output is not None:
        check_output(output, "-o")


def _submit_and_report(ctx: CliContext, kind: str, params: dict[str, Any],
                       output: Path | None, wait: bool, as_json: bool,
                       timeout: float | None, wait_for_slaves: float,
                       seed: int | None) -> None:
    from rqcluster import enqueue
    _ = ctx.config  # a bad config is refused first, then bad input, then a dead broker
    job = enqueue.validate(kind, ctx.config, seed=seed, **params)
    slaves_live = _look_for_slaves(ctx, wait_for_slaves)
    job_id = enqueue.write(ctx.conn, job, cluster_key(ctx.config))
    if not slaves_live:
        names = ", ".join(s.name for s in ctx.config.slaves)
        click.echo(f"warning: no live slave (none of {names} has a heartbeat): job {job_id} "
                   "waits until one starts (rqcluster node --mode slave --name NAME)",
                   err=True)
    if not wait and output is None:
        click.echo(json.dumps({"job": job_id, "seed": job.seed}) if as_json else job_id)
        return
    if not as_json:
        click.echo(f"submitted job {job_id} (seed {job.seed})", err=True)
    _wait_and_show(ctx, job_id, output, as_json, timeout)


def _look_for_slaves(ctx: CliContext, wait_for_slaves: float) -> bool:
    """True if a slave is live, after waiting up to ``wait_for_slaves`` s if asked to
    (then, none at all refuses the job: nothing is written)."""
    from rqcluster.membership import live_shares
    if live_shares(ctx.conn, ctx.config):  # joined slaves count, draining ones do not
        return True
    if not wait_for_slaves:
        return False
    click.echo(f"no live slave yet; waiting up to {wait_for_slaves:g} s for one", err=True)
    if liveness.wait_for_slaves(ctx.conn, ctx.config, wait_for_slaves, find=live_shares):
        return True
    raise SlaveWaitTimeout(f"no slave became live within {wait_for_slaves:g} s; nothing was "
                           "submitted (start one: rqcluster node --mode slave --name NAME)")


def _wait_and_show(ctx: CliContext, job_id: str, output: Path | None, as_json: bool,
                   timeout: float | None) -> None:
    reporter = ProgressReporter()
    try:
        record = jobs.wait(ctx.conn, job_id, timeout, on_progress=reporter)
    finally:
        reporter.close()
    _show_result(ctx, record, output, as_json)


def _show_result(ctx: CliContext, record: JobRecord, output: Path | None,
                 as_json: bool) -> None:
    elapsed = (record.finished or time.time()) - record.submitted
    if record.state is not JobState.DONE:
        if as_json:
            click.echo(json.dumps({"job": record.id, "state": record.state.value,
                                   "error": record.error, "elapsed": elapsed,
                                   "seed": record.seed}))
        jobs.raise_for_state(record)
    value = jobs.get_result(ctx.conn, record.id, out=output)
    if as_json:
        click.echo(json.dumps({"job": record.id, "state": "done", "elapsed": round(elapsed, 6),
                               "params": record.params, "seed": record.seed,
                               "result": _jsonable(value, output)}))
        return
    if isinstance(value, jobs.ArrayFile):
        click.echo(f"wrote {value.path} ({_shape(value.shape)} {value.dtype})", err=True)
        click.echo(str(value.path))
    elif isinstance(value, np.ndarray):
        click.echo(np.array2string(value, threshold=64))
        click.echo(f"({_shape(value.shape)} {value.dtype}; use -o FILE.npy to save it)",
                   err=True)
    elif isinstance(value, float | int | str):
        click.echo(value)
    else:
        click.echo(json.dumps(_jsonable(value, None)))
    if output is not None and not isinstance(value, jobs.ArrayFile):
        click.echo(f"(-o {output} ignored: the result is not an array)", err=True)
    click.echo(f"job {record.id} done in {elapsed:.2f} s", err=True)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape) or "scalar"


def _jsonable(value: Any, output: Path | None) -> Any:
    if isinstance(value, jobs.ArrayFile):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "file": str(value.path)}
    if isinstance(value, np.ndarray):
        doc: dict[str, Any] = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if output is not None:
            doc["file"] = str(output)
        elif value.size <= SMALL_ARRAY:
            doc["data"] = value.tolist()
        return doc
    if isinstance(value, list):
        return [_jsonable(v, None) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v, None) for k, v in value.items()}
    if isinstance(value, complex):
        return [value.real, value.imag]
    return value


@cli.command()
@click.argument("job_id", metavar="JOB", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--limit", default=20, show_default=True, help="Jobs to list without JOB.")
@pass_ctx
def status(ctx: CliContext, job_id: str | None, as_json: bool, limit: int) -> None:
    """Show one job (state, units done/total, per-slave counts, error) or the recent jobs."""
    if job_id is None:
        records = jobs.list_jobs(ctx.conn, limit)
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in records]))
            return
        if not records:
            click.echo("no jobs yet")
        for r in records:
            units = f"{r.done_units}/{r.total}" if r.total is not None else "-"
            click.echo(f"{r.id}  {r.state.value:<9} {units:>11}  {_when(r.submitted)}  "
                       f"{r.description}")
        return
    st = jobs.get_status(ctx.conn, job_id)
    st = jobs.JobStatus(jobs.explain_stall(ctx.conn, st.record), st.per_slave)
    perf = _performance(ctx, st.per_slave)
    if as_json:
        click.echo(json.dumps({**st.to_dict(), "performance": perf}))
        return
    _print_status(st)
    if perf:
        click.echo("  perf       " + ", ".join(
            f"{s} {p['configured']}" + (f" (observed {p['observed']:.2f})"
                                           if p["observed"] is not None else "")
            for s, p in perf.items()))


def _performance(ctx: CliContext, names: Any) -> dict[str, dict[str, Any]]:
    """Configured (or joined-with) and observed performance of the named slaves."""
    from rqcluster import adaptive, membership
    observed = adaptive.read_observed(ctx.conn)
    configured: dict[str, float | str] = {
        s.name: "auto" if s.auto else s.performance
        for s in membership.current_slaves(ctx.conn, ctx.config)}
    return {n: {"configured": configured.get(n), "observed": observed.get(n)}
            for n in names if n in configured}


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _print_status(st: JobStatus) -> None:
    r = st.record
    click.echo(f"job {r.id}  {r.description}")
    units = f"{r.done_units}/{r.total} units" if r.total is not None else "not placed yet"
    click.echo(f"  state      {r.state.value}  {units}")
    if r.waiting:
        click.echo(f"  waiting    {r.waiting}")
    end = r.finished or time.time()
    click.echo(f"  submitted  {_when(r.submitted)}  ({end - r.submitted:.2f} s "
               f"{'in all' if r.finished else 'so far'})")
    if r.seed is not None:
        click.echo(f"  seed       {r.seed}")
    if st.per_slave:
        click.echo("  slaves     " + ", ".join(f"{s}: {n}" for s, n in st.per_slave.items()))
    if r.retries or r.lost or r.moved:
        click.echo(f"  faults     {r.moved} units moved off slaves that lost them, {r.lost} "
                   f"runs lost with a dead worker, {r.retries} retries")
    if r.killed:
        click.echo(f"  killed     {r.killed} units (by the job's scheduler)")
    if r.stolen or r.drained:
        click.echo(f"  balance    {r.stolen} queued units stolen by idle slaves, {r.drained} "
                   "moved off draining slaves")
    if r.fetched:
        click.echo("  fetched    " + ", ".join(f"{name} x{n}" for name, n in r.fetched.items())
                   + "  (whole inputs, once per slave process)")
    if r.error:
        click.echo(f"  error      {jobs.format_error(r)}")


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an array result to this .npy file.")
@click.option("--wait", is_flag=True, help="Wait for the job to finish.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --wait: give up after this long (exit 3).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def result(ctx: CliContext, job_id: str, output: Path | None, wait: bool,
           timeout: float | None, as_json: bool) -> None:
    """Print (or save with -o) a job's result; exit 1 if it failed."""
    _check_output(output)
    if wait:
        _wait_and_show(ctx, job_id, output, as_json, timeout)
        return
    record = jobs.get_record(ctx.conn, job_id)
    if not record.state.terminal:
        raise InputError(f"job {job_id} is {record.state.value} ({record.done_units}/"
                         f"{record.total or '?'} units); use --wait to wait for it")
    _show_result(ctx, record, output, as_json)


@cli.command()
@click.argument("job_id", metavar="JOB")
@pass_ctx
def cancel(ctx: CliContext, job_id: str) -> None:
    """Cancel a job: its queued units never run, its running ones are stopped (their
    workers are told at once), its result is never stored."""
    if jobs.cancel(ctx.conn, job_id, ctx.config.options.result_ttl):
        click.echo(f"cancelled job {job_id}")
    else:
        record = jobs.get_record(ctx.conn, job_id)
        click.echo(f"job {job_id} had already ended ({record.state.value})")


@cli.command()
@click.argument("job_id", metavar="JOB")
@pass_ctx
def forget(ctx: CliContext, job_id: str) -> None:
    """Delete an ended job's record and result now (they expire after result-ttl anyway)."""
    jobs.forget(ctx.conn, job_id)
    click.echo(f"forgot job {job_id}")


@cli.command()
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON and exit.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1),
              metavar="SECONDS", help="Time between frames.")
@click.option("--jobs", "max_jobs", default=100, show_default=True, metavar="N",
              type=click.IntRange(min=1), help="Newest jobs to read per frame.")
@pass_ctx
def watch(ctx: CliContext, once: bool, as_json: bool, interval: float, max_jobs: int) -> None:
    """Live dashboard of the cluster: broker, masters, slaves, jobs, results, events.

    \b
    Full screen, redrawn every second; q or Ctrl-C quits. Colour is a hint only: states
    are spelled out, so it reads in a monochrome terminal, at 80 columns or wider.
    Examples:
      rqcluster watch
      rqcluster watch --once          # one frame on stdout
      rqcluster watch --json | jq .slaves
    """
    from rich.console import Console

    from rqcluster import watch as live
    from rqcluster.snapshot import take_snapshot
    if as_json:
        snap = take_snapshot(ctx.conn, ctx.config, max_jobs=max_jobs)
        click.echo(json.dumps(snap.to_dict(), indent=2))
        return
    console = Console()
    if once or not console.is_terminal:
        live.print_once(ctx.conn, ctx.config, console, max_jobs=max_jobs)
        return
    live.run_live(ctx.conn, ctx.config, console, interval=interval, max_jobs=max_jobs)


@cli.command()
@click.option("--size", default=2048, show_default=True, help="Matrix side of the matmul.")
@click.option("--samples", default=100_000_000, show_default=True,
              help="Monte Carlo points.")
@click.option("--keep-running", is_flag=True,
              help="Leave the cluster up after the jobs (Ctrl-C stops it).")
@pass_ctx
def demo(ctx: CliContext, size: int, samples: int, keep_running: bool) -> None:
    """Start a Redis, a master and the config's slaves on this machine, run a matmul and
    a Monte Carlo pi job, check them against numpy, and stop everything it started."""
    from rqcluster.demo import run_demo
    sys.exit(run_demo(ctx.path, size=size, samples=samples, keep_running=keep_running,
                      say=lambda line: click.echo(line)))


def main() -> None:
    cli(prog_name="rqcluster")
