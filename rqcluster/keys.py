"""Every Redis key, stream, consumer group and queue name rqcluster uses, built here only.

Everything lives under one prefix so a cluster can share a Redis database with other
tools, and so an operator can see at a glance what belongs to rqcluster. Keys of one job
share the ``{job_id}`` hash tag, so a Redis Cluster would keep them in one slot (the Lua
scripts touch several of them at once).
"""

PREFIX = "rqc"

# List of job ids waiting for a master-assign to split and place them (RPUSH / BLMOVE).
SUBMITTED = f"{PREFIX}:submitted"

# Stream of unit partials and unit failures, written by slaves, read by master-combine.
RESULTS_STREAM = f"{PREFIX}:results"

# Consumer group of every master-combine on RESULTS_STREAM; members share the entries.
COMBINERS_GROUP = "combiners"

# Set of job ids whose partials are all stored but whose result is not yet; a combiner
# that dies between the two leaves the job here and any combiner finishes it.
COMBINE_READY = f"{PREFIX}:combine-ready"

# Sorted set of every job id by submit time (score = unix time), for `status` and `watch`.
JOBS_INDEX = f"{PREFIX}:jobs"

# Sorted set of the jobs not yet ended, by submit time: the dashboard lists them however
# old they are (JOBS_INDEX only gives it the newest).
UNFINISHED = f"{PREFIX}:jobs:unfinished"

# Set of every slave name that ever heartbeat, so the dashboard finds slaves that are not
# in its config.
SLAVES = f"{PREFIX}:slaves"

# Hash: combiner consumer name -> partials it stored (lets operators see the sharing).
COMBINER_STATS = f"{PREFIX}:stats:combiners"

# Hash: "{slave}" -> units it completed (all jobs), "{slave}:busy" -> seconds spent in
# units, "{slave}:lost" -> units taken off it because it died holding them,
# "{slave}:stolen" / "{slave}:drained" -> queued units an idle slave took from it / moved
# off it while it was draining (neither is a loss).
SLAVE_STATS = f"{PREFIX}:stats:slaves"

# Hash: slave name -> JSON {performance, jobs, job, at}: its observed performance (an
# exponentially weighted mean over finished jobs, on the configured scale), written by
# master-assign (``rqcluster.adaptive``).
OBSERVED = f"{PREFIX}:observed"

# Hash: slave name -> JSON {performance, host, at} of every slave that joined at run time
# (not in the config; options.allow-join). Written by the joining slave's node, removed by
# master-assign once the slave has been drained and has left.
JOINED = f"{PREFIX}:joined"

# Set of slave names being drained (`rqcluster drain`): no unit is placed on them, their
# queued units are moved to others, and each stops once it holds nothing. A slave started
# again leaves the set.
DRAINING = f"{PREFIX}:draining"

# Hash: "{job_id}:{unit}" -> JSON {worker, slave, at} of every unit a slave is running
# now. Written when a unit starts, removed by its completion; an entry whose worker has
# no heartbeat any more is a unit lost with its worker, which the reaper moves.
RUNNING = f"{PREFIX}:running"

# Stream of things that happened (slave joined / went silent, unit moved, job done ...),
# capped at about EVENTS_MAXLEN entries; the entry id's time is the event's time.
EVENTS = f"{PREFIX}:events"
EVENTS_MAXLEN = 1000

# Stream of what the coordinator of multi-stage (graph) jobs must act on: a graph unit
# completed (its dependents may be ready, its scheduler's ``unit_done`` hook must run),
# a slave joined or died (``slave_joined`` / ``slave_died`` hooks). Written by the
# completion script and the reaper, read by master-assign through SCHEDULERS_GROUP, so
# an event is handled once even across master-assign restarts.
SCHEDULE_STREAM = f"{PREFIX}:schedule"

# Consumer group of every master-assign on SCHEDULE_STREAM.
SCHEDULERS_GROUP = "coordinators"

# Set of graph jobs that are running: a restarted master-assign places their ready units
# and finishes the settled ones; slave events fan out to those with a scheduler.
GRAPHS = f"{PREFIX}:graphs"

# Set of the slaves master-assign last saw live: a slave that appears in or vanishes from
# the live set is announced once on SCHEDULE_STREAM (the ``slave_joined`` / ``slave_died``
# hooks), even across master-assign restarts.
SCHEDULE_LIVE = f"{PREFIX}:schedule:live"


def assigning(node: str) -> str:
    """List of job ids a master-assign has taken but not yet placed (crash recovery)."""
    return f"{PREFIX}:assigning:{node}"


def job(job_id: str) -> str:
    """Hash: the job record (kind, state, params, counters, timestamps, error)."""
    return f"{PREFIX}:job:{{{job_id}}}"


def units(job_id: str) -> str:
    """Hash: unit index -> JSON unit record (slave, spec, attempts)."""
    return f"{PREFIX}:job:{{{job_id}}}:units"


def partials(job_id: str) -> str:
    """Hash: unit index -> encoded partial. Written by the slave's completion step with
    HSETNX, so the first completion of a unit is the only one that counts."""
    return f"{PREFIX}:job:{{{job_id}}}:partials"


def folded(job_id: str) -> str:
    """Set of unit indexes whose results-stream entry a combiner has handled."""
    return f"{PREFIX}:job:{{{job_id}}}:folded"


def slave_counts(job_id: str) -> str:
    """Hash: slave name -> units of this job it completed (for status and watch)."""
    return f"{PREFIX}:job:{{{job_id}}}:slaves"


def attempts(job_id: str) -> str:
    """Hash: unit index -> how many times a slave started it; "{unit}:lost" -> JSON list
    of the slaves that died while running it (a unit that kills every slave fails)."""
    return f"{PREFIX}:job:{{{job_id}}}:attempts"


def deps(job_id: str) -> str:
    """Hash (graph jobs): unit index -> how many of its prerequisites are not done yet,
    for units that wait; the completion that makes it 0 moves the unit to ``ready``."""
    return f"{PREFIX}:job:{{{job_id}}}:deps"


def dependents(job_id: str) -> str:
    """Hash (graph jobs): unit index -> JSON list of the waiting units that take its
    result (only those that were waiting for it when they were added)."""
    return f"{PREFIX}:job:{{{job_id}}}:dependents"


def ready(job_id: str) -> str:
    """List (graph jobs): indexes of units whose prerequisites are all done and that no
    slave holds yet; master-assign places them and takes them off in one transaction."""
    return f"{PREFIX}:job:{{{job_id}}}:ready"


def scheduler_state(job_id: str) -> str:
    """Hash (graph jobs): "seen:{entry}" -> 1 for each schedule-stream entry handled for
    the job; with a scheduler, "state" -> the user's scheduler object, pickled and sealed,
    as it was after the last event it handled (saved with that event's effects)."""
    return f"{PREFIX}:job:{{{job_id}}}:scheduler"


def combining(job_id: str) -> str:
    """String with a TTL: which combiner is combining the job now (others leave it be)."""
    return f"{PREFIX}:job:{{{job_id}}}:combining"


def ended(job_id: str) -> str:
    """List holding one element once the job has ended (any terminal state): waiting
    clients block on it (BLMOVE onto itself, which leaves it as it is) instead of polling."""
    return f"{PREFIX}:job:{{{job_id}}}:ended"


def job_input(job_id: str, name: str) -> str:
    """Base key of one job input (array, items, function or shipped program file); see
    ``store`` for the layout."""
    return f"{PREFIX}:job:{{{job_id}}}:input:{name}"


def job_result(job_id: str) -> str:
    """Base key of the combined result (an encoded value, chunked like any blob)."""
    return f"{PREFIX}:job:{{{job_id}}}:result"


def heartbeat(slave: str) -> str:
    """String with a short TTL: a slave is live while this key exists."""
    return f"{SLAVE_PREFIX}{slave}:heartbeat"


def worker(name: str) -> str:
    """String with a short TTL: one slave worker process's live status (JSON: slave, host,
    pid, the unit it runs and since when). A unit whose worker key is gone was lost."""
    return f"{PREFIX}:worker:{name}"


SLAVE_PREFIX = f"{PREFIX}:slave:"


def slave_units(slave: str) -> str:
    """Set of "{job_id}:{unit}" placed on a slave and not yet completed: what the reaper
    moves when the slave dies. (The completion script builds this name from
    SLAVE_PREFIX, as it learns the owner only from the unit record.)"""
    return f"{SLAVE_PREFIX}{slave}:units"


def slave_rate(slave: str) -> str:
    """Hash: 5-second bucket (Redis time // 5) -> units completed, last minute only (the
    dashboard's throughput sparkline)."""
    return f"{SLAVE_PREFIX}{slave}:rate"


def unit_member(job_id: str, unit: int) -> str:
    """How a unit is named in RUNNING and the slave unit sets."""
    return f"{job_id}:{unit}"


def role_heartbeat(role: str) -> str:
    """String with a short TTL: some node runs ``role`` (master-assign / master-combine)."""
    return f"{PREFIX}:role:{role}:heartbeat"


def slave_queue(slave: str) -> str:
    """Name of the RQ queue a slave's `rq worker` listens on (RQ adds its own prefix)."""
    return f"rqcluster.{slave}"


def rq_queue_key(slave: str) -> str:
    """The Redis list behind a slave's RQ queue (RQ's own naming)."""
    return f"rq:queue:{slave_queue(slave)}"


def rq_job_id(job_id: str, unit: int) -> str:
    """Deterministic RQ job id of a unit, so placing a unit twice overwrites, never doubles."""
    return f"rqc-{job_id}-{unit}"
