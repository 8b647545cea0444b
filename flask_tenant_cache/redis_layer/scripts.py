"""The Lua scripts of the second layer: each one atomic step, every key it touches in KEYS."""

from __future__ import annotations

__all__ = ["ABANDON", "DROP", "FINISH", "GET_OR_CLAIM", "PUBLISH", "RAISE"]

# Ends a load this process claimed. A found tenant is stored, unless an invalidation bumped
# the epoch since the load began, and indexed under its id so an invalidation by any alias
# finds every key that holds it. A not-found answer becomes a marker tagged with that epoch,
# which waiting processes trust only while the epoch is unchanged.
# The processes waiting for it are woken by a message on the "loaded" channel.
# KEYS: epoch, claim, entry, then for a found tenant its alias set and one id pointer per
# alias. ARGV: epoch seen, entry ('' = not found), ttl, tenant id, node id, marker ms,
# loaded channel, cache key, PUBLISH (or SPUBLISH on a cluster, where the bus is sharded).
FINISH = """
local fresh = (redis.call('GET', KEYS[1]) or '0') == ARGV[1]
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
redis.call(ARGV[9], ARGV[7], ARGV[8])
if not fresh then return 0 end
if ARGV[2] == '' then
  redis.call('SET', KEYS[2], 'none:' .. ARGV[1], 'PX', ARGV[6])
  return 1
end
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('EXPIRE', KEYS[4], ARGV[3])
for i = 5, #KEYS do redis.call('SET', KEYS[i], ARGV[4], 'EX', ARGV[3]) end
return 1
"""

# Reads an entry, or claims its load when there is neither an entry nor a live claim, in one
# step: between a separate read and claim, another process could load, store and release.
# A not-found marker of an older epoch is no answer and no claim: it is replaced.
# KEYS: entry, claim, epoch; ARGV: node id, claim ms. Returns {entry, owner, epoch, claimed}.
GET_OR_CLAIM = """
local raw = redis.call('GET', KEYS[1])
local owner = redis.call('GET', KEYS[2])
local epoch = redis.call('GET', KEYS[3]) or '0'
local claimed = 0
if not raw then
  local stale = owner and string.sub(owner, 1, 5) == 'none:' and owner ~= 'none:' .. epoch
  if not owner or stale then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
    owner = ARGV[1]
    claimed = 1
  end
end
return {raw or false, owner or false, epoch, claimed}
"""

# Gives up a claim after a failed load, so the waiting processes load for themselves.
# KEYS: claim; ARGV: node id, loaded channel, cache key, PUBLISH (or SPUBLISH).
ABANDON = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call(ARGV[4], ARGV[2], ARGV[3])
return 1
"""

# Drops the entry of one identifier and every entry of the tenants it names, and bumps the
# epoch so loads already running cannot write their stale result back. The caller read the
# id pointer and the alias sets first, to declare every key here; if a write changed them
# since, nothing is done (0) and the caller reads again.
# KEYS: epoch, entry, id pointer, the alias sets, their members; ARGV: pointer read ('' =
# none), number of alias sets. Returns the new epoch.
DROP = """
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[1] then return 0 end
local sets = tonumber(ARGV[2])
local declared = {}
for i = 4 + sets, #KEYS do declared[KEYS[i]] = true end
for i = 4, 3 + sets do
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if not declared[key] then return 0 end
  end
end
redis.call('DEL', KEYS[2])
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
return redis.call('INCR', KEYS[1])
"""

# Publishes a bus message numbered by the next value of the sequence, in one step, so the
# numbers reach every subscriber in order. KEYS: sequence; ARGV: channel, the message's JSON
# object without its opening brace, PUBLISH (or SPUBLISH on a cluster). Returns the number.
PUBLISH = """
local number = redis.call('INCR', KEYS[1])
redis.call(ARGV[3], ARGV[1], '{"s": ' .. number .. ', ' .. ARGV[2])
return number
"""

# Raises a counter to at least ARGV[1] (after Redis lost writes, so that it never repeats a
# value a process has seen). KEYS: the counter. Returns its value.
RAISE = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if value < floor then
  redis.call('SET', KEYS[1], floor)
  return floor
end
return value
"""
