"""Running a node in one of the seed's four modes.

``assign-reduce`` runs a master-assign and a master-combine loop in one process (two
threads, one Redis connection each); ``assign`` and ``reduce`` run one of them, so they
can live on different machines and in any number. ``slave`` runs the standard `rq worker`
on the slave's queue, with the settings module and worker class from ``workers/`` (the
same command a slave machine can run by hand), and restarts it when it dies: a unit
that crashes its process, or the OOM killer, costs a restart, not the slave.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rqcluster import keys, membership
from rqcluster.assign import Assigner
from rqcluster.broker import die_with_parent
from rqcluster.config import ClusterConfig
from rqcluster.connection import connect, wait_for_broker
from rqcluster.coordinate import Coordinator
from rqcluster.errors import ConfigError
from rqcluster.reduce import Reducer

log = logging.getLogger("rqcluster.node")

MODES = ("assign-reduce", "assign", "reduce", "slave")
SHUTDOWN_GRACE = 3.0  # seconds a stopping node gives its loops to finish their step
RESTART_BACKOFF = (1.0, 30.0)  # a dying worker is restarted after 1 s, doubling to 30 s
STABLE_AFTER = 60.0  # a worker that ran this long resets the backoff


def slave_command(slave: str, worker: str | None = None) -> list[str]:
    """The `rq worker` command line of a slave (without its environment)."""
    rq = shutil.which("rq", path=str(Path(sys.executable).parent)) or shutil.which("rq")
    if rq is None:
        raise ConfigError("cannot find the `rq` command (is rq installed in this environment?)")
    return [rq, "worker", "-c", "workers.settings", "-w", "workers.slave.SlaveWorker",
            "-n", worker or f"{slave}.{os.getpid()}"]


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads(config: ClusterConfig, cpus: int | None = None) -> int:
    """Threads each local slave's BLAS may use: this machine's cores shared among the
    slaves the config places on it. Two slaves each spinning two OpenBLAS threads on two
    cores run several times slower than two slaves with one thread each."""
    local = sum(1 for s in config.slaves if is_local_ip(s.ip))
    return max(1, (cpus or os.cpu_count() or 1) // max(1, local))


def is_local_ip(ip: str) -> bool:
    """True for a loopback address or one of this host's own addresses."""
    if ipaddress.ip_address(ip).is_loopback:
        return True
    try:
        return ip in {str(i[4][0]) for i in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return False


def slave_environment(config: ClusterConfig, slave: str) -> dict[str, str]:
    """The slave's environment: config and name, and BLAS threads unless already set."""
    env = dict(os.environ)
    threads = str(blas_threads(config))
    for var in BLAS_THREAD_VARS:
        env.setdefault(var, threads)
    if config.path is not None:
        env["RQCLUSTER_CONFIG"] = str(config.path)
    env["RQCLUSTER_NODE"] = slave
    return env


def check_mode(config: ClusterConfig, mode: str, name: str) -> None:
    """Refuse a mode the named node does not have in the config, with the right names."""
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "slave":
        config.slave(name)
        return
    wanted = {"assign": ["master-assign"], "reduce": ["master-combine"],
              "assign-reduce": ["master-assign", "master-combine"]}[mode]
    roles = config.roles(name)
    for role in wanted:
        if role not in roles:
            holder = config.master_assign.name if role == "master-assign" \
                else config.master_combine.name
            raise ConfigError(f"node {name!r} is not the {role} in {config.path or 'the config'}"
                              f" (the {role} is {holder!r}); use --name {holder}")


def run_node(config: ClusterConfig, mode: str, name: str,
             performance: float | None = None) -> int:
    """Run a node until SIGTERM/SIGINT; returns the exit status. A slave not in the
    config joins the cluster if the config allows it (``rqcluster.membership``)."""
    joining = membership.check_join(config, mode, name, performance)
    if not joining:
        check_mode(config, mode, name)
    wait_for_broker(config.redis, on_wait=log.info)  # one clear error if it never comes
    if mode == "slave":
        conn = connect(config.redis)
        membership.announce(conn, name, performance, joining)
        conn.close()
        return supervise_slave(config, name)
    loops: list[Callable[[threading.Event], None]] = []
    if mode in ("assign", "assign-reduce"):
        loops.append(Assigner(connect(config.redis, name=client_name("assign", name)),
                              config, name).run)
        loops.append(Coordinator(connect(config.redis, name=client_name("coordinate", name)),
                                 config, name).run)
    if mode in ("reduce", "assign-reduce"):
        loops.append(Reducer(connect(config.redis, name=client_name("reduce", name)),
                             config, name).run)
    return _run_loops(loops, f"{mode} node {name}")


def client_name(loop: str, node: str) -> str:
    """The Redis client name of a node's loop (no spaces allowed): ``rqcluster-reduce-N``."""
    return f"rqcluster-{loop}-{node}".replace(" ", "_")


def _run_loops(loops: list[Callable[[threading.Event], None]], what: str) -> int:
    stop = threading.Event()
    failed = threading.Event()

    def guarded(loop: Callable[[threading.Event], None]) -> None:
        try:
            loop(stop)
        except Exception:
            log.exception("%s: loop crashed", what)
            failed.set()
            stop.set()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: %s, stopping", what, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=guarded, args=(loop,), daemon=True) for loop in loops]
    for t in threads:
        t.start()
    log.info("%s running (pid %d)", what, os.getpid())
    while not stop.wait(0.5):
        pass
    # Each loop finishes its current step; one stuck retrying a vanished broker is
    # abandoned (its threads are daemons, and every write it makes is one atomic step).
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    return 1 if failed.is_set() else 0


def supervise_slave(config: ClusterConfig, slave: str) -> int:
    """Run the slave's `rq worker`, restarting it (with backoff) whenever it dies by a
    signal or an error, until SIGTERM/SIGINT, which is passed on for a warm shutdown.

    Each worker gets a fresh name (RQ refuses a name whose last owner died uncleanly),
    and the status key of one that died is deleted at once, so the reaper moves the unit
    it was running now instead of a heartbeat TTL later."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = slave_environment(config, slave)
    backoff = RESTART_BACKOFF[0]
    for run in itertools.count():  # ends by returning: stopped, or a bad config
        worker = f"{slave}.{os.getpid()}.{run}"
        cmd = slave_command(slave, worker)
        began = time.monotonic()
        child = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent)
        status = child.wait()
        if stopping.is_set() or status in (0, 2):  # stopped, or a bad config: no restart
            return status
        _forget_worker(config, worker)
        if time.monotonic() - began >= STABLE_AFTER:
            backoff = RESTART_BACKOFF[0]
        how = f"signal {-status}" if status < 0 else f"exit status {status}"
        log.warning("slave %s: worker %s died (%s); restarting in %.0f s", slave, worker,
                    how, backoff)
        if stopping.wait(backoff):
            return 0
        backoff = min(backoff * 2, RESTART_BACKOFF[1])
    return 0  # not reached: the loop only ends by returning


def _forget_worker(config: ClusterConfig, worker: str) -> None:
    try:
        connect(config.redis, check=False).delete(keys.worker(worker))
    except Exception as e:  # best effort: the key's TTL does the same a little later
        log.warning("cannot clear the status of worker %s: %s", worker, e)
