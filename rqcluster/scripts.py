"""The Lua scripts that make multi-key steps atomic, one named constant each.

Each script says which keys and arguments it takes. They are what turns at-least-once
execution into exactly-once effect: running a unit twice, or replaying a stream entry,
changes nothing the second time.
"""

# Slave: the start of one unit. If the job is running, the unit not done yet and still
# held by this slave (not moved off it while it was silent), count the attempt (and, past
# the first, a retry in the job record), record which worker runs the unit (so the
# reaper can tell a unit lost with its worker) and publish it in the worker's status;
# answer what the slave needs, in one round trip.
# KEYS[1] = job hash   KEYS[2] = units hash   KEYS[3] = attempts hash
# KEYS[4] = running hash   KEYS[5] = worker status key   KEYS[6] = partials hash
# KEYS[7] = this slave's held units
# ARGV[1] = unit index   ARGV[2] = unit member ("job:unit")   ARGV[3] = running entry JSON
# ARGV[4] = worker status JSON   ARGV[5] = worker status TTL (ms)
# Returns {state, kind, params, unit record, attempts, job seed} (the seed is nil for a
# job recorded before jobs had seeds); only {why} if it must not run.
START_FN = """
local function start_unit(K, A)
  local job = redis.call('HMGET', K[1], 'state', 'kind', 'params', 'seed')
  if job[1] ~= 'running' then return {job[1] or 'gone'} end
  if redis.call('HEXISTS', K[6], A[1]) == 1 then return {'done'} end
  if redis.call('SISMEMBER', K[7], A[2]) == 0 then return {'moved'} end
  local unit = redis.call('HGET', K[2], A[1])
  if not unit then return {'gone'} end
  local attempts = redis.call('HINCRBY', K[3], A[1], 1)
  if attempts > 1 then redis.call('HINCRBY', K[1], 'retries', 1) end
  redis.call('HSET', K[4], A[2], A[3])
  redis.call('SET', K[5], A[4], 'PX', A[5])
  return {job[1], job[2], job[3], unit, attempts, job[4]}
end
"""
START_UNIT = START_FN + "return start_unit(KEYS, ARGV)"


# Graph jobs: the units waiting for ``index`` (a unit now done or killed) have one
# prerequisite fewer; those with none left go on the job's ready list for master-assign
# to place (a unit killed meanwhile no longer waits, and is skipped). Shared by the
# completion step and the kill step.
# D = {deps hash, dependents hash, ready list}
RELEASE_FN = """
local function release_dependents(D, index)
  local waiting = redis.call('HGET', D[2], index)
  if not waiting then return end
  redis.call('HDEL', D[2], index)
  for _, unit in ipairs(cjson.decode(waiting)) do
    if redis.call('HEXISTS', D[1], unit) == 1
        and redis.call('HINCRBY', D[1], unit, -1) <= 0 then
      redis.call('HDEL', D[1], unit)
      redis.call('RPUSH', D[3], unit)
    end
  end
end
"""


# Slave: the completion step of one unit. The first completion of (job, unit) stores the
# partial, decrements the job's remaining counter, counts it for the slave (and its busy
# seconds in the job record's "busy:{slave}", which observed performance is measured
# from) and announces it; any later completion of the same unit changes nothing. Either
# way the unit is no longer running nor held by the slave it was placed on.
# A unit of a single-stage job is announced on the results stream, for master-combine.
# The partial's bytes go to the job's partials hash, not into the stream entry: the
# combiner reads them once, when it combines, instead of once per hop. A unit of a graph
# job (field ``graph``) releases the units waiting for it (``RELEASE_FN``) in the same
# step, and is announced on the schedule stream instead, for master-assign (the job's
# ``pending`` counts announcements not handled yet).
# KEYS[1] = job hash            KEYS[2] = partials hash
# KEYS[3] = per-slave counts    KEYS[4] = results stream
# KEYS[5] = units hash          KEYS[6] = running hash
# KEYS[7] = slave stats hash    KEYS[8] = this slave's rate buckets
# KEYS[9] = deps hash           KEYS[10] = dependents hash
# KEYS[11] = ready list         KEYS[12] = schedule stream
# ARGV[1] = job id   ARGV[2] = unit index   ARGV[3] = slave   ARGV[4] = partial bytes
# ARGV[5] = seconds the unit took   ARGV[6] = unit member   ARGV[7] = slave units key
#   prefix (the owner's set is "<prefix><slave>:units"; the owner is read from the unit)
# Returns the remaining count, -1 if the job is not running, -2 for a duplicate.
COMPLETE_FN = RELEASE_FN + """
local function complete_unit(K, A)
  redis.call('HDEL', K[6], A[6])
  local unit = redis.call('HGET', K[5], A[2])
  if unit then
    redis.call('SREM', A[7] .. cjson.decode(unit)['s'] .. ':units', A[6])
  end
  local job = redis.call('HMGET', K[1], 'state', 'graph')
  if job[1] ~= 'running' then return -1 end
  if redis.call('HSETNX', K[2], A[2], A[4]) == 0 then return -2 end
  local remaining = redis.call('HINCRBY', K[1], 'remaining', -1)
  redis.call('HINCRBY', K[3], A[3], 1)
  redis.call('HINCRBYFLOAT', K[1], 'busy', A[5])
  redis.call('HINCRBYFLOAT', K[1], 'busy:' .. A[3], A[5])
  redis.call('HINCRBY', K[7], A[3], 1)
  redis.call('HINCRBYFLOAT', K[7], A[3] .. ':busy', A[5])
  local bucket = math.floor(tonumber(redis.call('TIME')[1]) / 5)
  redis.call('HINCRBY', K[8], bucket, 1)
  redis.call('HDEL', K[8], bucket - 12)
  redis.call('EXPIRE', K[8], 120)
  if job[2] then
    release_dependents({K[9], K[10], K[11]}, A[2])
    redis.call('HINCRBY', K[1], 'pending', 1)
    redis.call('XADD', K[12], '*', 'event', 'unit-done', 'job', A[1], 'unit', A[2])
  else
    redis.call('XADD', K[4], '*', 'job', A[1], 'unit', A[2], 'slave', A[3],
               'bytes', string.len(A[4]))
  end
  return remaining
end
"""
COMPLETE_UNIT = COMPLETE_FN + "return complete_unit(KEYS, ARGV)"

# Slave, inside a batch: the completion of one unit and the start of the next in one
# round trip (the two steps above, each as atomic as alone).
# KEYS[1..12] = COMPLETE_UNIT's keys   KEYS[13..19] = START_UNIT's keys
# ARGV[1..7] = COMPLETE_UNIT's args   ARGV[8..12] = START_UNIT's args
# Returns {COMPLETE_UNIT's answer, START_UNIT's answer}.
COMPLETE_AND_START = COMPLETE_FN + START_FN + """
local ck, ca, sk, sa = {}, {}, {}, {}
for i = 1, 12 do ck[i] = KEYS[i] end
for i = 13, 19 do sk[i - 12] = KEYS[i] end
for i = 1, 7 do ca[i] = ARGV[i] end
for i = 8, 12 do sa[i - 7] = ARGV[i] end
return {complete_unit(ck, ca), start_unit(sk, sa)}
"""


# master-assign (graph jobs): add units to a running job. Each unit's record is stored
# and counted (total, remaining); a unit whose prerequisites are all done already goes
# on the ready list, the others wait (deps, dependents). Atomic with completions, so a
# prerequisite that completes meanwhile is never missed.
# KEYS[1] = job hash   KEYS[2] = units hash   KEYS[3] = partials hash
# KEYS[4] = deps hash   KEYS[5] = dependents hash   KEYS[6] = ready list
# ARGV = index, unit record JSON, prerequisites JSON list, repeated per unit
# Returns how many of the units are ready (-1, adding nothing, if the job is not running).
ADD_UNITS = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return -1 end
local ready = 0
for i = 1, #ARGV, 3 do
  local index = ARGV[i]
  redis.call('HSET', KEYS[2], index, ARGV[i + 1])
  local unmet = 0
  for _, p in ipairs(cjson.decode(ARGV[i + 2])) do
    if redis.call('HEXISTS', KEYS[3], p) == 0 then
      unmet = unmet + 1
      local waiting = cjson.decode(redis.call('HGET', KEYS[5], p) or '[]')
      table.insert(waiting, tonumber(index))
      redis.call('HSET', KEYS[5], p, cjson.encode(waiting))
    end
  end
  if unmet == 0 then
    redis.call('RPUSH', KEYS[6], index)
    ready = ready + 1
  else
    redis.call('HSET', KEYS[4], index, unmet)
  end
end
local n = (#ARGV) / 3
redis.call('HINCRBY', KEYS[1], 'total', n)
redis.call('HINCRBY', KEYS[1], 'remaining', n)
return ready
"""

# master-assign (graph jobs): kill units. A unit not done yet is done now, with ``nil``
# (the encoded None in ARGV[1]) as its result: it counts as handled, is no longer held
# by its slave (a queued copy is skipped) and releases the units waiting for it. A
# running one is stopped by its worker when told (``rqcluster.kill``); its late
# completion changes nothing.
# KEYS[1] = job hash   KEYS[2] = partials hash   KEYS[3] = units hash
# KEYS[4] = deps hash   KEYS[5] = dependents hash   KEYS[6] = ready list
# KEYS[7] = attempts hash (gets "{unit}:killed")
# ARGV[1] = the encoded None   ARGV[2] = slave units key prefix   ARGV[3] = job id
# ARGV[4..] = unit indexes
# Returns the indexes that were killed (not done before).
KILL_UNITS = RELEASE_FN + """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return {} end
local killed = {}
for i = 4, #ARGV do
  local index = ARGV[i]
  local unit = redis.call('HGET', KEYS[3], index)
  if unit and redis.call('HSETNX', KEYS[2], index, ARGV[1]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'remaining', -1)
    redis.call('HINCRBY', KEYS[1], 'killed', 1)
    redis.call('HSET', KEYS[7], index .. ':killed', 1)
    redis.call('SREM', ARGV[2] .. cjson.decode(unit)['s'] .. ':units', ARGV[3] .. ':' .. index)
    redis.call('HDEL', KEYS[4], index)
    redis.call('LREM', KEYS[6], 0, index)
    release_dependents({KEYS[4], KEYS[5], KEYS[6]}, index)
    table.insert(killed, tonumber(index))
  end
end
return killed
"""


# master-assign's reaper: move one unit off a slave that lost it (the slave went silent,
# or the worker running it died, or it vanished in delivery) to a live slave. Nothing
# moves unless the job is running, the unit is not done and the source still holds it,
# so two reapers, or a reaper racing the unit's completion, move it at most once. A unit
# lost while running for the max-attempts'th time is not moved: its job must fail.
# The stealer (``rqcluster.steal``) moves queued units with it too, naming a counter in
# ARGV[8] ("stolen" or "drained"): such a move is no loss, so it is counted in the job's
# and the source's own field of that name instead of "moved" / "{slave}:lost". A unit that
# is running (RUNNING has an entry for it, and ARGV[7] is '') is never taken.
# KEYS[1] = job hash   KEYS[2] = partials hash   KEYS[3] = units hash
# KEYS[4] = attempts hash   KEYS[5] = running hash   KEYS[6] = source's held units
# KEYS[7] = target's held units   KEYS[8] = slave stats hash
# ARGV[1] = unit index   ARGV[2] = unit member   ARGV[3] = unit record naming the target
# ARGV[4] = source slave   ARGV[5] = '1' if it was lost while running   ARGV[6] = max
#   attempts   ARGV[7] = the worker that was running it ('' if none)
# ARGV[8] = optional: the counter of a move that is not a loss ("stolen", "drained")
# Returns {1, moves} if moved, {0} if there was nothing to move, {-1, lost-on JSON} if
# the unit used up its attempts.
MOVE_UNIT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  redis.call('SREM', KEYS[6], ARGV[2])
  return {0}
end
if redis.call('SISMEMBER', KEYS[6], ARGV[2]) == 0 then return {0} end
local entry = redis.call('HGET', KEYS[5], ARGV[2])
if entry and cjson.decode(entry)['worker'] ~= ARGV[7] then return {0} end
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[1], 'lost', 1)
  local field = ARGV[1] .. ':lost'
  local lost = cjson.decode(redis.call('HGET', KEYS[4], field) or '[]')
  table.insert(lost, ARGV[4])
  local encoded = cjson.encode(lost)
  redis.call('HSET', KEYS[4], field, encoded)
  if tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0') >= tonumber(ARGV[6]) then
    redis.call('HDEL', KEYS[5], ARGV[2])
    return {-1, encoded}
  end
end
redis.call('SMOVE', KEYS[6], KEYS[7], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[2])
local counter = ARGV[8]
if counter and counter ~= '' then
  redis.call('HINCRBY', KEYS[8], ARGV[4] .. ':' .. counter, 1)
  redis.call('HINCRBY', KEYS[1], counter, 1)
else
  redis.call('HINCRBY', KEYS[8], ARGV[4] .. ':lost', 1)
  redis.call('HINCRBY', KEYS[1], 'moved', 1)
end
return {1, redis.call('HINCRBY', KEYS[4], ARGV[1] .. ':moves', 1)}
"""

# Any node: move a job that is not finished yet to a terminal state (failed/cancelled),
# with the error that explains it. Only the first terminal transition wins.
# KEYS[1] = job hash   KEYS[2] = the job's ended list (wakes waiting clients)
# KEYS[3] = the unfinished jobs index   KEYS[4] = the running graph jobs set
# ARGV[1] = new state   ARGV[2] = error JSON ('' for none)   ARGV[3] = job id
# Returns 1 if this call ended the job, 0 if it had already ended.
END_JOB = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'submitted' and state ~= 'running' then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished', t[1] + t[2] / 1000000)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[2]) end
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('SREM', KEYS[4], ARGV[3])
return 1
"""

# master-assign (graph jobs): an event on the schedule stream was handled for a job
# (with its effects, queued before this in the same transaction). Marked once per job, so
# an entry delivered twice (a slow coordinator and the one that took it over) counts
# once: the job's ``pending`` count of unhandled announcements drops only the first time.
# KEYS[1] = job hash   KEYS[2] = the job's coordination hash   KEYS[3] = schedule stream
# ARGV[1] = consumer group   ARGV[2] = entry id   ARGV[3] = '1' if the entry announced a
#   unit of this job (count it off ``pending``)   ARGV[4] = '1' to acknowledge the entry
# ARGV[5] = seconds the coordination hash lives unless renewed (it is deleted when the
#   job ends; this bounds one written just after)
# Returns 1 the first time, 0 for an entry handled before.
HANDLED = """
local first = redis.call('HSETNX', KEYS[2], 'seen:' .. ARGV[2], 1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
if first == 1 and ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], 'pending', -1) end
if ARGV[4] == '1' then
  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[3], ARGV[2])
end
return first
"""

# master-assign (graph jobs): the job is done. With ARGV[2] = '1' only if it settled:
# every unit done (or killed) and every announcement handled (its scheduler had the last
# word). The result was written just before, in the same transaction.
# KEYS[1] = job hash   KEYS[2] = the job's ended list   KEYS[3] = the unfinished jobs
#   index   KEYS[4] = running graph jobs set
# ARGV[1] = job id   ARGV[2] = '1' to require the job settled, '0' to finish it anyway
# Returns 1 if this call finished the job, 0 if not.
FINISH_GRAPH = """
local job = redis.call('HMGET', KEYS[1], 'state', 'remaining', 'pending')
if job[1] ~= 'running' then return 0 end
if ARGV[2] == '1' and (tonumber(job[2]) ~= 0 or tonumber(job[3] or '0') ~= 0) then
  return 0
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', 'done', 'finished', t[1] + t[2] / 1000000)
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('RPUSH', KEYS[2], 'done')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"""

# master-combine: handle one results-stream entry, then acknowledge and delete it, in one
# step (a combiner killed in between loses nothing; an entry delivered twice counts once).
# An entry counts only if the job is running and its partial really is stored, so a
# forged or stale entry changes nothing. The entry that makes the job's units all handled
# puts the job in the combine-ready set.
# KEYS[1] = job hash    KEYS[2] = partials hash   KEYS[3] = results stream
# KEYS[4] = combine-ready set   KEYS[5] = combiner stats hash   KEYS[6] = folded set
# ARGV[1] = consumer group   ARGV[2] = entry id   ARGV[3] = job id   ARGV[4] = consumer
# ARGV[5] = unit index
# Returns 1 if the job is now ready to combine, 0 if not, -1 if the entry was ignored
# (not a running job's stored unit), -2 if the unit was already folded (a duplicate).
FOLD_ENTRY = """
local result = -1
if redis.call('HGET', KEYS[1], 'state') == 'running'
    and redis.call('HEXISTS', KEYS[2], ARGV[5]) == 1 then
  if redis.call('SADD', KEYS[6], ARGV[5]) == 1 then
    redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
    result = 0
    if redis.call('SCARD', KEYS[6]) == tonumber(redis.call('HGET', KEYS[1], 'total')) then
      redis.call('SADD', KEYS[4], ARGV[3])
      result = 1
    end
  else
    result = -2
  end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return result
"""
