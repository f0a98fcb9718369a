"""The Lua scripts that make multi-key steps atomic, one named constant each.

Each script says which keys and arguments it takes. They are what turns at-least-once
execution into exactly-once effect: running a unit twice, or replaying a stream entry,
changes nothing the second time.
"""

# Slave: the completion step of one unit. The first completion of (job, unit) stores the
# partial, decrements the job's remaining counter, counts it for the slave and announces
# it on the results stream; any later completion of the same unit changes nothing.
# The partial's bytes go to the job's partials hash, not into the stream entry: the
# combiner reads them once, when it combines, instead of once per hop.
# KEYS[1] = job hash            KEYS[2] = partials hash
# KEYS[3] = per-slave counts    KEYS[4] = results stream
# ARGV[1] = job id   ARGV[2] = unit index   ARGV[3] = slave   ARGV[4] = partial bytes
# ARGV[5] = seconds the unit took
# Returns the remaining count, -1 if the job is not running, -2 for a duplicate.
COMPLETE_UNIT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[4]) == 0 then return -2 end
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', -1)
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'busy', ARGV[5])
redis.call('XADD', KEYS[4], '*', 'job', ARGV[1], 'unit', ARGV[2], 'slave', ARGV[3],
           'bytes', string.len(ARGV[4]))
return remaining
"""

# Any node: move a job that is not finished yet to a terminal state (failed/cancelled),
# with the error that explains it. Only the first terminal transition wins.
# KEYS[1] = job hash
# ARGV[1] = new state   ARGV[2] = error JSON ('' for none)
# Returns 1 if this call ended the job, 0 if it had already ended.
END_JOB = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'submitted' and state ~= 'running' then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished', t[1] + t[2] / 1000000)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[2]) end
redis.call('HDEL', KEYS[1], 'waiting')
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
# Returns 1 if the job is now ready to combine, 0 if not, -1 if the entry was ignored.
FOLD_ENTRY = """
local result = -1
if redis.call('HGET', KEYS[1], 'state') == 'running'
    and redis.call('HEXISTS', KEYS[2], ARGV[5]) == 1 then
  result = 0
  if redis.call('SADD', KEYS[6], ARGV[5]) == 1 then
    redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
  end
  if redis.call('SCARD', KEYS[6]) == tonumber(redis.call('HGET', KEYS[1], 'total')) then
    redis.call('SADD', KEYS[4], ARGV[3])
    result = 1
  end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return result
"""
