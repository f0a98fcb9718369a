"""One picture of the whole cluster, read in two pipelined round trips.

``take_snapshot`` is what `rqcluster watch` draws and `watch --json` prints. It reads only
records whose size is bounded by the number of slaves, workers and jobs shown, never by
the number of queued units (LLEN and SCARD are O(1); no KEYS, no SCAN):

1. the broker's TIME and INFO, both role heartbeats, the slave stats, the running units,
   the newest and the oldest unfinished job ids, the known slave names, the results
   stream and its consumer group, the newest events, and per configured slave its
   heartbeat (and PTTL), queue length, held units and rate buckets;
2. what the first answer named: every listed job's record (with its own retry, lost and
   moved counters) and per-slave counts, every worker's status (and PTTL), and the same
   per-slave records for slaves not in the config.

Ages are computed from TTLs (Redis's clock), never by comparing two machines' clocks.
Everything here is plain data; ``dashboard`` renders it without touching Redis.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from rqcluster import keys
from rqcluster.adaptive import decode_observed
from rqcluster.config import ClusterConfig
from rqcluster.errors import DecodeError
from rqcluster.events import Event
from rqcluster.models import JobRecord, text

ROLES = ("master-assign", "master-combine")
RATE_BUCKET = 5        # seconds per slave rate bucket (the completion script's)
RATE_BUCKETS = 12      # buckets kept: the last minute
MAX_JOBS = 100         # newest jobs read per snapshot
MAX_EVENTS = 12
# A slave counts as measured (shows an observed performance) after this many units.
MEASURED_UNITS = 3



@dataclass(frozen=True)
class BrokerView:
    """The Redis server every node shares (None where INFO did not say)."""

    url: str
    version: str | None = None
    memory: int | None = None  # bytes used
    aof: bool | None = None
    clients: int | None = None


@dataclass(frozen=True)
class RoleView:
    """A master role: the node the config names for it, and who heartbeats it."""

    role: str
    configured: str
    alive: bool
    node: str | None = None
    host: str | None = None
    pid: int | None = None
    age: float | None = None  # seconds since its last beat


@dataclass(frozen=True)
class UnitRun:
    """A unit a slave is running now."""

    unit: str                  # "job:index"
    worker: str
    seconds: float | None      # how long it has run; None if its worker status is gone
    worker_alive: bool = True  # False: its worker died (the reaper moves the unit)


@dataclass(frozen=True)
class SlaveView:
    """One slave: configured, alive or not, what it runs and how fast it works."""

    name: str
    # idle / busy / dead / unknown (not in the config) / draining / drained (stopped)
    state: str
    ip: str | None = None
    performance: float | None = None  # configured
    observed: float | None = None     # measured, on the configured scale (see observe)
    alive: bool = False
    beat_age: float | None = None     # seconds since its last heartbeat
    host: str | None = None
    pid: int | None = None
    running: tuple[UnitRun, ...] = ()
    units_done: int = 0               # all jobs, ever
    busy_seconds: float = 0.0
    lost: int = 0                     # units taken off it when it died
    rate: tuple[int, ...] = (0,) * RATE_BUCKETS  # units per 5 s bucket, oldest first
    throughput: float = 0.0           # units/s over the last minute
    queued: int = 0                   # RQ queue length
    held: int = 0                     # units placed on it and not completed
    joined: bool = False              # joined at run time (not in the config)
    auto: bool = False                # its config says "performance": "auto"
    stolen: int = 0                   # queued units idle slaves took from it

    @property
    def configured(self) -> bool:
        return self.state != "unknown"


@dataclass(frozen=True)
class JobView:
    """One job as the dashboard shows it."""

    id: str
    kind: str
    state: str
    description: str
    total: int | None
    done: int
    submitted: float
    started: float | None
    finished: float | None
    elapsed: float
    rate: float | None        # units/s since it was placed
    eta: float | None         # seconds left at that rate
    per_slave: dict[str, int] = field(default_factory=dict)
    retries: int | None = None  # unit starts beyond the first; None: not known
    lost: int | None = None     # runs lost with a dead slave
    moved: int | None = None    # units moved off a dead slave (queued or running)
    error: str | None = None
    waiting: str | None = None
    killed: int = 0             # graph jobs: units its scheduler killed

    @property
    def terminal(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


@dataclass(frozen=True)
class ConsumerView:
    """A member of the combiners' group on the results stream."""

    name: str
    pending: int
    idle: float  # seconds since it last read
    folded: int = 0


@dataclass(frozen=True)
class StreamView:
    """The results stream: what waits for a combiner and who combines."""

    length: int = 0
    pending: int = 0          # delivered to a combiner, not yet acknowledged
    lag: int = 0              # not yet delivered to any combiner
    consumers: tuple[ConsumerView, ...] = ()
    reducers_alive: int = 0   # consumers that read within the heartbeat TTL


@dataclass(frozen=True)
class Snapshot:
    """Everything one dashboard frame shows."""

    now: float  # Redis's clock
    broker: BrokerView
    roles: tuple[RoleView, ...]
    slaves: tuple[SlaveView, ...]
    jobs: tuple[JobView, ...]  # newest first
    stream: StreamView
    events: tuple[Event, ...]  # oldest first
    submitted: int = 0         # jobs waiting for a master-assign
    round_trips: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["events"] = [e.to_dict() for e in self.events]
        return d


def public_url(url: str) -> str:
    """The broker URL with any password removed."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def take_snapshot(conn: redis.Redis, config: ClusterConfig, now: float | None = None,
                  max_jobs: int = MAX_JOBS, max_events: int = MAX_EVENTS) -> Snapshot:
    """Read the cluster in two pipelined round trips (one when nothing runs); ``now``
    overrides Redis's clock (tests)."""
    ttl = config.options.heartbeat_ttl
    first = _read_first(conn, config, max_jobs, max_events)
    t = first["time"]
    now = now if now is not None else float(t[0]) + float(t[1]) / 1e6
    running = _running(first["running"])
    stats = _stats(first["stats"])
    job_ids = [text(j) for j, _ in first["jobs"] or []]
    configured = {s.name for s in config.slaves}
    joined = first["joined"]
    extra = sorted((set(stats) | {r["slave"] for r in running.values()}
                    | first["known_slaves"] | set(joined)) - configured)
    workers = sorted({_worker_of(hb) for hb in first["slave_hb"] if hb} - {""}
                     | {r["worker"] for r in running.values()})
    second, trips = _read_second(conn, job_ids, workers, extra)

    worker_status = {w: (_json(raw), pttl) for w, (raw, pttl)
                     in zip(workers, second["workers"], strict=True)}
    runs = _unit_runs(running, worker_status, ttl)
    bucket = int(now) // RATE_BUCKET
    slaves = [replace(_slave_view(s.name, s.ip, s.performance, rec, runs, stats, now, bucket,
                                  ttl), auto=s.auto)
              for s, rec in zip(config.slaves, first["slave_records"], strict=True)]
    for name, rec in zip(extra, second["extra_slaves"], strict=True):
        view = _slave_view(name, None, joined.get(name), rec, runs, stats, now, bucket, ttl)
        if name in joined:
            slaves.append(replace(view, joined=True))
        elif view.alive or view.running or view.queued or view.held:
            slaves.append(view)
    slaves = [_membership(v, first["draining"], first["observed"]) for v in slaves]
    return Snapshot(
        now=now, broker=_broker(config.redis.url, first["info"]),
        roles=tuple(_role(role, configured_node, raw, pttl, ttl) for role, configured_node,
                    (raw, pttl) in zip(ROLES, (config.master_assign.name,
                                               config.master_combine.name),
                                       first["roles"], strict=True)),
        slaves=tuple(observe(slaves)),
        jobs=tuple(_jobs(second["jobs"], now)),
        stream=_stream(first["stream"], ttl), events=tuple(_events(first["events"])),
        submitted=_int(first["submitted"]), round_trips=1 + trips)


# --- the two round trips -------------------------------------------------------------------

def _slave_commands(pipe: Any, name: str) -> None:
    pipe.get(keys.heartbeat(name))
    pipe.pttl(keys.heartbeat(name))
    pipe.llen(keys.rq_queue_key(name))
    pipe.scard(keys.slave_units(name))
    pipe.hgetall(keys.slave_rate(name))


SLAVE_COMMANDS = 5


def _read_first(conn: redis.Redis, config: ClusterConfig, max_jobs: int,
                max_events: int) -> dict[str, Any]:
    pipe = conn.pipeline(transaction=False)
    pipe.time()
    pipe.info()
    for role in ROLES:
        pipe.get(keys.role_heartbeat(role))
        pipe.pttl(keys.role_heartbeat(role))
    pipe.hgetall(keys.SLAVE_STATS)
    pipe.hgetall(keys.RUNNING)
    pipe.zrevrange(keys.JOBS_INDEX, 0, max_jobs - 1, withscores=True)
    pipe.zrange(keys.UNFINISHED, 0, max_jobs - 1, withscores=True)
    pipe.smembers(keys.SLAVES)
    pipe.llen(keys.SUBMITTED)
    pipe.xlen(keys.RESULTS_STREAM)
    pipe.xinfo_groups(keys.RESULTS_STREAM)
    pipe.xinfo_consumers(keys.RESULTS_STREAM, keys.COMBINERS_GROUP)
    pipe.hgetall(keys.COMBINER_STATS)
    pipe.xrevrange(keys.EVENTS, count=max_events)
    pipe.hgetall(keys.OBSERVED)
    pipe.hgetall(keys.JOINED)
    pipe.smembers(keys.DRAINING)
    for s in config.slaves:
        _slave_commands(pipe, s.name)
    # A missing stream or group is an error reply, not a failure of the snapshot.
    r = [None if isinstance(x, redis.ResponseError) else x
         for x in pipe.execute(raise_on_error=False)]
    slave_raw = r[20:]
    return {
        "time": r[0], "info": r[1] or {}, "roles": [(r[2], r[3]), (r[4], r[5])],
        "stats": r[6] or {}, "running": r[7] or {}, "jobs": _newest(r[8], r[9], max_jobs),
        "known_slaves": {text(n) for n in r[10] or ()}, "submitted": r[11],
        "stream": (r[12], r[13], r[14], r[15]), "events": r[16] or [],
        "observed": decode_observed(r[17]), "joined": _joined(r[18]),
        "draining": {text(n) for n in r[19] or ()},
        "slave_records": _chunks(slave_raw, SLAVE_COMMANDS),
        "slave_hb": slave_raw[::SLAVE_COMMANDS],
    }


def _read_second(conn: redis.Redis, job_ids: list[str], workers: list[str],
                 extra: list[str]) -> tuple[dict[str, Any], int]:
    if not (job_ids or workers or extra):
        return {"jobs": [], "workers": [], "extra_slaves": []}, 0
    pipe = conn.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.slave_counts(job_id))
    for w in workers:
        pipe.get(keys.worker(w))
        pipe.pttl(keys.worker(w))
    for name in extra:
        _slave_commands(pipe, name)
    r = pipe.execute(raise_on_error=False)
    n = 2 * len(job_ids)
    rest = r[n:]
    m = 2 * len(workers)
    return {"jobs": _chunks(r[:n], 2),
            "workers": _chunks(rest[:m], 2),
            "extra_slaves": _chunks(rest[m:], SLAVE_COMMANDS)}, 1


# --- decoding ------------------------------------------------------------------------------

def _chunks(items: list[Any], n: int) -> list[tuple[Any, ...]]:
    return [tuple(items[i:i + n]) for i in range(0, len(items), n)]


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _json(raw: Any) -> dict[str, Any] | None:
    if not raw or isinstance(raw, Exception):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _age(pttl: Any, ttl: float) -> float | None:
    """Seconds since a key with a ``ttl`` s TTL was last written, from its PTTL."""
    if not isinstance(pttl, int) or pttl < 0:
        return None
    return max(0.0, ttl - pttl / 1000)


def _worker_of(raw: Any) -> str:
    record = _json(raw) or {}
    return str(record.get("worker") or "")


def _running(raw: dict[Any, Any]) -> dict[str, dict[str, str]]:
    out = {}
    for member, value in raw.items():
        entry = _json(value) or {}
        out[text(member)] = {"worker": str(entry.get("worker", "?")),
                              "slave": str(entry.get("slave", "?"))}
    return out


def _stats(raw: dict[Any, Any]) -> dict[str, dict[str, float]]:
    """SLAVE_STATS as slave -> {"done", "busy", "lost"}."""
    out: dict[str, dict[str, float]] = {}
    for k, v in raw.items():
        name, _, what = text(k).partition(":")
        try:
            out.setdefault(name, {})[what or "done"] = float(v)
        except ValueError:
            continue
    return out


def _unit_runs(running: dict[str, dict[str, str]],
               worker_status: dict[str, tuple[dict[str, Any] | None, Any]],
               ttl: float) -> dict[str, list[UnitRun]]:
    """Running units per slave, each with how long it has run: the worker's own
    ``at - since`` plus the age of its status (so no two clocks are compared)."""
    by_slave: dict[str, list[UnitRun]] = {}
    for member, entry in sorted(running.items()):
        status, pttl = worker_status.get(entry["worker"], (None, None))
        seconds = None
        if status is not None and status.get("unit") == member:
            try:
                seconds = max(0.0, float(status["at"]) - float(status["since"])
                              + (_age(pttl, ttl) or 0.0))
            except (KeyError, TypeError, ValueError):
                seconds = None
        by_slave.setdefault(entry["slave"], []).append(
            UnitRun(member, entry["worker"], seconds, worker_alive=status is not None))
    return by_slave


def _slave_view(name: str, ip: str | None, performance: float | None,
                record: tuple[Any, ...], runs: dict[str, list[UnitRun]],
                stats: dict[str, dict[str, float]], now: float, bucket: int,
                ttl: float) -> SlaveView:
    hb, pttl, queued, held, rate = record
    beat = _json(hb)
    alive = beat is not None
    mine = tuple(runs.get(name, ()))
    if performance is None:
        state = "unknown"
    elif not alive:
        state = "dead"
    else:
        state = "busy" if any(r.worker_alive for r in mine) else "idle"
    buckets = {_int(k, -1): _int(v) for k, v in (rate or {}).items()}
    series = tuple(buckets.get(b, 0) for b in range(bucket - RATE_BUCKETS + 1, bucket + 1))
    window = (RATE_BUCKETS - 1) * RATE_BUCKET + (now - bucket * RATE_BUCKET)
    st = stats.get(name, {})
    return SlaveView(
        name=name, state=state, ip=ip, performance=performance, alive=alive,
        beat_age=_age(pttl, ttl) if alive else None,
        host=(beat or {}).get("host"), pid=(beat or {}).get("pid"), running=mine,
        units_done=int(st.get("done", 0)), busy_seconds=st.get("busy", 0.0),
        lost=int(st.get("lost", 0)), stolen=int(st.get("stolen", 0)), rate=series,
        throughput=sum(series) / window if window > 0 else 0.0,
        queued=_int(queued), held=_int(held))


def _joined(raw: Any) -> dict[str, float]:
    out = {}
    for name, value in (raw or {}).items():
        record = _json(value) or {}
        try:
            out[text(name)] = float(record["performance"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _membership(view: SlaveView, draining: set[str], observed: dict[str, float]
                ) -> SlaveView:
    """A slave being drained shows it (then "drained" once stopped); the observed
    performance master-assign measured replaces ``observe``'s estimate once there is one."""
    if view.name in draining:
        view = replace(view, state="draining" if view.alive else "drained")
    if view.name in observed:
        view = replace(view, observed=round(observed[view.name], 2))
    return view


def observe(slaves: list[SlaveView]) -> list[SlaveView]:
    """Give each measured slave an estimated observed performance (until master-assign has
    measured it per job, ``rqcluster.adaptive``): its units per busy second,
    scaled so the measured configured slaves' mean matches their configured mean (so
    "performance 2, observed 1.4" reads on one scale). Needs two measured slaves."""
    measured = [s for s in slaves if s.performance is not None
                and s.units_done >= MEASURED_UNITS and s.busy_seconds > 0]
    if len(measured) < 2:
        return slaves
    speeds = [s.units_done / s.busy_seconds for s in measured]
    scale = (sum(s.performance or 0.0 for s in measured) / len(measured)) \
        / (sum(speeds) / len(speeds))
    out = []
    for s in slaves:
        if s.units_done >= MEASURED_UNITS and s.busy_seconds > 0 and s.observed is None:
            s = replace(s, observed=round(s.units_done / s.busy_seconds * scale, 2))
        out.append(s)
    return out


def _role(role: str, configured: str, raw: Any, pttl: Any, ttl: float) -> RoleView:
    beat = _json(raw)
    if beat is None:
        return RoleView(role, configured, alive=False)
    return RoleView(role, configured, alive=True, node=beat.get("node"),
                    host=beat.get("host"), pid=beat.get("pid"), age=_age(pttl, ttl))


def _broker(url: str, info: dict[str, Any]) -> BrokerView:
    aof = info.get("aof_enabled")
    return BrokerView(url=public_url(url), version=info.get("redis_version"),
                      memory=info.get("used_memory"),
                      aof=None if aof is None else bool(int(aof)),
                      clients=info.get("connected_clients"))


def _newest(newest: Any, unfinished: Any, limit: int) -> list[tuple[Any, float]]:
    """The jobs to show, newest first: the newest ones, and unfinished ones however old
    (those first when there are more than ``limit``)."""
    chosen = {text(j): score for j, score in unfinished or []}
    for j, score in newest or []:
        if len(chosen) >= limit:
            break
        chosen.setdefault(text(j), score)
    return sorted(chosen.items(), key=lambda js: -js[1])


def _jobs(raws: list[tuple[Any, Any]], now: float) -> list[JobView]:
    out = []
    for raw, counts in raws:
        if not raw or isinstance(raw, Exception):
            continue  # expired (the index is trimmed by `status`)
        try:
            record = JobRecord.decode(raw)
        except DecodeError:
            continue
        fields = {text(k): text(v) for k, v in raw.items()}
        per_slave = {text(k): _int(v) for k, v in sorted((counts or {}).items())}
        out.append(_job_view(record, fields, per_slave, now))
    return out


def _job_view(r: JobRecord, fields: dict[str, str], per_slave: dict[str, int],
              now: float) -> JobView:
    end = r.finished if r.finished is not None else now
    rate = eta = None
    if r.started is not None and r.done_units and end > r.started:
        rate = r.done_units / (end - r.started)
        if not r.state.terminal and r.total is not None:
            eta = (r.total - r.done_units) / rate
    retries = lost = moved = None
    if "retries" in fields:  # counted by the job itself from its placement on
        retries, lost, moved = r.retries, r.lost, r.moved
    error = None
    if r.error:
        lines = str(r.error.get("message", "error")).strip().splitlines() or ["error"]
        where = f"unit {r.error['unit']}: " if "unit" in r.error else ""
        error = where + lines[-1]
    return JobView(id=r.id, kind=r.kind, state=r.state.value, description=r.description,
                   total=r.total, done=r.done_units, submitted=r.submitted, started=r.started,
                   finished=r.finished, elapsed=max(0.0, end - r.submitted), rate=rate,
                   eta=eta, per_slave=per_slave, retries=retries, lost=lost, moved=moved,
                   error=error, waiting=r.waiting, killed=r.killed)


def _stream(raw: tuple[Any, Any, Any, Any], ttl: float) -> StreamView:
    length, groups, consumers, stats = raw
    group = next((g for g in groups or [] if text(g.get("name")) == keys.COMBINERS_GROUP),
                 None)
    pending = _int(group.get("pending")) if group else 0
    folded = {text(k): _int(v) for k, v in (stats or {}).items()}
    members = tuple(ConsumerView(text(c["name"]), _int(c.get("pending")),
                                 _int(c.get("idle")) / 1000, folded.get(text(c["name"]), 0))
                    for c in consumers or [])
    lag = group.get("lag") if group else None
    if lag is None:  # Redis < 7 does not say; handled entries are deleted, so the rest is lag
        lag = max(0, _int(length) - pending)
    return StreamView(length=_int(length), pending=pending, lag=_int(lag),
                      consumers=members,
                      reducers_alive=sum(1 for c in members if c.idle <= ttl))


def _events(entries: list[Any]) -> list[Event]:
    out = []
    for entry_id, raw in reversed(entries):
        fields = {text(k): text(v) for k, v in (raw or {}).items()}
        out.append(Event(at=int(text(entry_id).split("-")[0]) / 1000,
                         event=fields.pop("event", "?"), fields=fields))
    return out
