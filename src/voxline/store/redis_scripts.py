"""The Lua scripts behind `RedisStore`'s turn writes: each runs as one atomic step.

Turn batches are the hot path: one script applies the version guard, keeps positions unique per
conversation (a `turn_seqs` hash: seq -> turn id; a batch that would put two turns at one position
is refused whole, `SEQCONFLICT`) and touches the conversations, so a burst of deltas costs one
round trip and no WATCH retries.
"""

from __future__ import annotations

# Shared by the scripts: mark activity on a conversation, creating it from `bare` (a flat
# field/value list) when absent and `bare` is given; `updated_at` never goes back.
_TOUCH = """
local function touch(index, hash, id, now, bare)
  local current = redis.call('HGET', hash, 'updated_at')
  if not current then
    if not bare then return end
    redis.call('HSET', hash, unpack(bare))
  elseif tonumber(current) >= tonumber(now) then
    return
  else
    redis.call('HSET', hash, 'updated_at', now)
  end
  redis.call('ZADD', index, now, id)
end
"""

# KEYS: the conversations index, then per conversation its hash, turns, turn_versions and
# turn_seqs. ARGV: now; per conversation its id, a field count and the bare record's fields;
# then quintuples (conversation number, turn id, version, seq, record JSON) in any order.
# Every position is checked before anything is written, so a batch that would put two turns at
# one position is refused whole (a script's writes cannot be rolled back).
WRITE_TURNS = (
    _TOUCH
    + """
local now, at = ARGV[1], 2
local conversations = {}
for i = 1, (#KEYS - 1) / 4 do
  local id, count = ARGV[at], tonumber(ARGV[at + 1])
  local bare = {}
  for j = 1, 2 * count do bare[j] = ARGV[at + 1 + j] end
  conversations[i] = {id, bare}
  at = at + 2 + 2 * count
end
local first, taken = at, {}
while at <= #ARGV do
  local n, turn, version = tonumber(ARGV[at]), ARGV[at + 1], tonumber(ARGV[at + 2])
  local seq = tostring(tonumber(ARGV[at + 3]))
  local stored = redis.call('HGET', KEYS[4 * n], turn)
  if not stored or tonumber(stored) < version then
    local holder = taken[n .. ':' .. seq] or redis.call('HGET', KEYS[4 * n + 1], seq)
    if holder and holder ~= turn then
      return redis.error_reply('SEQCONFLICT ' .. conversations[n][1] .. ' ' .. seq)
    end
    taken[n .. ':' .. seq] = turn
  end
  at = at + 5
end
for i, conversation in ipairs(conversations) do
  touch(KEYS[1], KEYS[4 * i - 2], conversation[1], now, conversation[2])
end
at = first
while at <= #ARGV do
  local n, turn, version = tonumber(ARGV[at]), ARGV[at + 1], tonumber(ARGV[at + 2])
  local seq = tostring(tonumber(ARGV[at + 3]))
  local stored = redis.call('HGET', KEYS[4 * n], turn)
  if not stored or tonumber(stored) < version then
    local previous = redis.call('HGET', KEYS[4 * n - 1], turn)
    if previous then
      local old = tostring(cjson.decode(previous)['seq'])
      if old ~= seq and redis.call('HGET', KEYS[4 * n + 1], old) == turn then
        redis.call('HDEL', KEYS[4 * n + 1], old)
      end
    end
    redis.call('HSET', KEYS[4 * n], turn, ARGV[at + 2])
    redis.call('HSET', KEYS[4 * n - 1], turn, ARGV[at + 4])
    redis.call('HSET', KEYS[4 * n + 1], seq, turn)
  end
  at = at + 5
end
"""
)

# KEYS: the conversations index, the conversation's hash, turns, turn_versions, turn_seqs.
# ARGV: now, the conversation id, then the turn ids.
DELETE_TURNS = (
    _TOUCH
    + """
for at = 3, #ARGV do
  local previous = redis.call('HGET', KEYS[3], ARGV[at])
  if previous then
    local seq = tostring(cjson.decode(previous)['seq'])
    if redis.call('HGET', KEYS[5], seq) == ARGV[at] then redis.call('HDEL', KEYS[5], seq) end
    redis.call('HDEL', KEYS[3], ARGV[at])
    redis.call('HDEL', KEYS[4], ARGV[at])
  end
end
touch(KEYS[1], KEYS[2], ARGV[2], ARGV[1], nil)
"""
)
