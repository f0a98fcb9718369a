"""Who the slaves are now: the config's, those that joined at run time, those draining.

A slave not in the config may join when the config sets ``options.allow-join``: its node
(``rqcluster node --mode slave --name NEW --performance 2``) records it in
``keys.JOINED`` (name, performance, host: nothing secret) and from then on it is a slave
like the others: placed on, stolen for, reaped. ``rqcluster drain SLAVE`` puts a slave in
``keys.DRAINING``: nothing new is placed on it, master-assign moves its queued units to
other slaves (``rqcluster.steal``), and the slave's worker stops itself once it holds
nothing (its node then exits 0). Starting the slave again takes it out of the set.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import redis

from rqcluster import adaptive, events, keys, liveness
from rqcluster.config import NAME_RE, ClusterConfig, Slave
from rqcluster.errors import ConfigError, InputError
from rqcluster.models import text

SLAVE_DRAINING = "slave-draining"  # event
JOINED_IP = "0.0.0.0"  # a joined slave's address is not known (nodes never talk directly)


# --- who may join (pure) -----------------------------------------------------------------

def check_join(config: ClusterConfig, mode: str, name: str | None,
               performance: float | None) -> bool:
    """True if ``name`` starts as a slave that joins at run time (not in the config, and
    the config allows it); ConfigError with what to do if it may not. False for a node
    the config names (``--performance`` is then refused: the config says it)."""
    if not name and performance is not None:
        raise ConfigError("--performance is only for a slave that joins at run time; it "
                          "needs --name NEW (a name not in the config)")
    if not name or name in config.node_names():
        if performance is not None:
            raise ConfigError("--performance is only for a slave that joins at run time; "
                              f"node {name!r} is in {config.path or 'the config'}, which "
                              "gives its performance")
        return False
    if mode != "slave":
        return False  # the usual "not in the config" refusal follows
    if not config.options.allow_join:
        known = ", ".join(s.name for s in config.slaves)
        raise ConfigError(f"slave {name!r} is not in {config.path or 'the config'} (its slaves:"
                          f" {known}); to let slaves join at run time, set "
                          "options.allow-join to true in the config")
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"--name: {name!r} is not a valid slave name (letters, digits, '_',"
                          " '.' or '-', at most 63)")
    if performance is not None and not performance > 0:
        raise ConfigError(f"--performance must be a number > 0, got {performance:g}")
    return True


def worker_slave(config: ClusterConfig, name: str | None) -> str:
    """The slave a worker process serves: a configured slave, or (with allow-join) the
    name its node joined as."""
    if name and config.options.allow_join and name not in config.node_names():
        return name
    return config.slave(config.this_node(name)).name


# --- Redis -------------------------------------------------------------------------------

def announce(conn: redis.Redis, name: str, performance: float | None, joining: bool) -> None:
    """A slave node starting: record a joining slave, and end any drain of it."""
    pipe = conn.pipeline(transaction=True)
    if joining:
        pipe.hset(keys.JOINED, name, json.dumps({
            "performance": performance if performance is not None else 1.0,
            "host": liveness.HOST, "at": time.time()}))
    pipe.srem(keys.DRAINING, name)
    pipe.execute()


def joined(conn: redis.Redis) -> dict[str, float]:
    """Slaves that joined at run time -> the performance they joined with."""
    out = {}
    for name, raw in conn.hgetall(keys.JOINED).items():
        try:
            out[text(name)] = float(json.loads(raw)["performance"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def current_slaves(conn: redis.Redis, config: ClusterConfig) -> tuple[Slave, ...]:
    """The config's slaves, then the joined ones (by name)."""
    configured = {s.name for s in config.slaves}
    extra = [Slave(name, JOINED_IP, perf) for name, perf in sorted(joined(conn).items())
             if name not in configured]
    return (*config.slaves, *extra)


def with_joined(conn: redis.Redis, config: ClusterConfig) -> ClusterConfig:
    """``config`` with the joined slaves added (what the reaper and stealer work on)."""
    slaves = current_slaves(conn, config)
    return config if len(slaves) == len(config.slaves) else replace(config, slaves=slaves)


def draining(conn: redis.Redis) -> set[str]:
    return {text(n) for n in conn.smembers(keys.DRAINING)}


def live_shares(conn: redis.Redis, config: ClusterConfig) -> dict[str, float]:
    """The slaves the next job may be placed on (live, not draining), each with the
    performance that sizes its share (observed where adaptive; ``rqcluster.adaptive``)."""
    slaves = current_slaves(conn, config)
    pipe = conn.pipeline(transaction=False)
    pipe.smembers(keys.DRAINING)
    pipe.hgetall(keys.OBSERVED)
    for s in slaves:
        pipe.exists(keys.heartbeat(s.name))
    drain, observed_raw, *alive = pipe.execute()
    leaving = {text(n) for n in drain}
    observed = adaptive.decode_observed(observed_raw)
    return {s.name: adaptive.effective_performance(s, observed.get(s.name),
                                                   config.options.adaptive)
            for s, up in zip(slaves, alive, strict=True) if up and s.name not in leaving}


def drain(conn: redis.Redis, config: ClusterConfig, slave: str) -> dict[str, Any]:
    """Start draining ``slave``; what it holds now. InputError if no such slave."""
    names = {s.name for s in current_slaves(conn, config)}
    if slave not in names:
        raise InputError(f"no slave named {slave!r} (slaves: {', '.join(sorted(names))})")
    pipe = conn.pipeline(transaction=False)
    pipe.sadd(keys.DRAINING, slave)
    pipe.exists(keys.heartbeat(slave))
    pipe.scard(keys.slave_units(slave))
    _, alive, held = pipe.execute()
    events.emit(conn, SLAVE_DRAINING, slave=slave, units=held)
    return {"slave": slave, "alive": bool(alive), "held": int(held)}


def forget_drained(conn: redis.Redis, config: ClusterConfig, slave: str) -> bool:
    """A drained slave that left and holds nothing: a joined one is forgotten (gone from
    the dashboard); a configured one stays drained until it is started again."""
    configured = {s.name for s in config.slaves}
    if slave in configured:
        return False
    pipe = conn.pipeline(transaction=True)
    pipe.hdel(keys.JOINED, slave)
    pipe.srem(keys.DRAINING, slave)
    pipe.execute()
    return True
