"""The Lua scripts that make multi-key steps atomic, one named constant each.

Each script says which keys and arguments it takes. They are what turns at-least-once
execution into exactly-once effect: running a unit twice, or replaying a stream entry,
changes nothing the second time.
"""

# Slave: the completion step of one unit. The first completion of (job, unit) marks it
# done, decrements the job's remaining counter, counts it for the slave and appends the
# partial to the results stream; any later completion of the same unit does nothing.
# KEYS[1] = job hash            KEYS[2] = done-units set
# KEYS[3] = per-slave counts    KEYS[4] = results stream
# ARGV[1] = job id   ARGV[2] = unit index   ARGV[3] = slave   ARGV[4] = partial bytes
# ARGV[5] = seconds the unit took
# Returns the remaining count, -1 if the job is not running, -2 for a duplicate.
COMPLETE_UNIT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return -1 end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then return -2 end
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', -1)
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('HINCRBYFLOAT', KEYS[1], 'busy', ARGV[5])
redis.call('XADD', KEYS[4], '*', 'job', ARGV[1], 'unit', ARGV[2], 'slave', ARGV[3],
           'partial', ARGV[4])
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

# master-combine: store one partial from the results stream, then acknowledge and delete
# the entry, in one step (so a combiner killed in between loses nothing and stores
# nothing twice). The partial is read from the stream entry itself, not sent back.
# When the job's partials are complete, the job joins the combine-ready set.
# KEYS[1] = job hash    KEYS[2] = partials hash   KEYS[3] = results stream
# KEYS[4] = combine-ready set   KEYS[5] = combiner stats hash
# ARGV[1] = consumer group   ARGV[2] = entry id   ARGV[3] = job id   ARGV[4] = consumer
# Returns 1 if the job is now ready to combine, 0 otherwise.
STORE_PARTIAL = """
local ready = 0
local entry = redis.call('XRANGE', KEYS[3], ARGV[2], ARGV[2])
if #entry == 1 and redis.call('HGET', KEYS[1], 'state') == 'running' then
  local fields = entry[1][2]
  local unit, partial
  for i = 1, #fields, 2 do
    if fields[i] == 'unit' then unit = fields[i + 1] end
    if fields[i] == 'partial' then partial = fields[i + 1] end
  end
  if unit and partial and redis.call('HSETNX', KEYS[2], unit, partial) == 1 then
    redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
    local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
    if redis.call('HLEN', KEYS[2]) == total then
      redis.call('SADD', KEYS[4], ARGV[3])
      ready = 1
    end
  end
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return ready
"""
