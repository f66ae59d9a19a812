-- room_advance: one admission step; every replica runs it a few times a second.
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2] per-step bound B (silent waiters dropped, ended tickets forgotten);
-- ARGV[3] events kept in the log
-- Returns {'OK', admitted} | {'BAD_CALL', detail}
-- Steps, in this order (so admission order is join order among live tickets):
--   1. end admitted sessions past their expiry;
--   2. drop at most B waiters silent for the waiter timeout (found by heartbeat, O(log n + B)),
--      counted from no earlier than the step that followed a gap of more than 3 s (an outage:
--      nobody could heartbeat meanwhile);
--   3. forget at most B tickets ended over an hour ago, trim the admission log to the last
--      minute and the event log to its last ARGV[3] events;
--   4. refill the token bucket (one second's worth at most) and admit the lowest numbers, as
--      many as the tokens, the active cap and the queue allow (none while paused). A silent
--      waiter that step 2 did not reach yet is dropped here instead of admitted (at most B
--      more), so the bound never lets an abandoned place in.
-- Invariant: over any t seconds at most burst + rate * t admissions; active <= cap; the work of
-- one step is bounded by B and the admissions, whatever the line's length.
local now, bound, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not now or not bound or not keep or bound < 1 or keep < 1 then
  return {'BAD_CALL', 'advance arguments'}
end
local c = config()

for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, bound)) do
  local t = load(id)
  if t then
    finish(t, 'EXPIRED', now)
  else
    redis.call('ZREM', K_ACTIVE, id)
  end
end

local last = tonumber(redis.call('HGET', K_STATE, 'last_step_ms'))
local resumed = tonumber(redis.call('HGET', K_STATE, 'resumed_ms'))
if not (last and resumed and now - last <= OUTAGE_GAP_MS) then
  resumed = now
end
redis.call('HSET', K_STATE, 'last_step_ms', math.max(now, last or now), 'resumed_ms', resumed)
local cutoff = now - c.timeout * 1000
local counting = resumed <= cutoff
local function drop(id)
  local t = load(id)
  if t then
    finish(t, 'EXPIRED', now)
  else
    redis.call('ZREM', K_SEEN, id)
    redis.call('ZREM', K_WAITING, id)
  end
end
if counting then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_SEEN, '-inf', cutoff, 'LIMIT', 0, bound)) do
    drop(id)
  end
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ENDED, '-inf', now - ENDED_TTL_MS, 'LIMIT', 0, bound)) do
  redis.call('HDEL', K_TICKETS, id)
  redis.call('ZREM', K_ENDED, id)
end
redis.call('ZREMRANGEBYSCORE', K_ADMITS, '-inf', now - RATE_WINDOW_MS)
redis.call('ZREMRANGEBYRANK', K_LOG, 0, -(keep + 1))

if not c.enabled then
  return {'OK', 0}
end
local tokens = tonumber(redis.call('HGET', K_STATE, 'tokens')) or burst(c)
local refilled = tonumber(redis.call('HGET', K_STATE, 'refilled_ms')) or now
if now > refilled then
  tokens = math.min(burst(c), tokens + (now - refilled) * c.rate / 60000)
  refilled = now
end
local k = 0
if not c.paused then
  local room = math.max(0, c.cap - redis.call('ZCARD', K_ACTIVE))
  k = math.min(math.floor(math.max(tokens, 0)), room, redis.call('ZCARD', K_WAITING))
end
local admitted, skips = 0, bound
while admitted < k and skips > 0 do
  local batch = redis.call('ZRANGE', K_WAITING, 0, k - admitted - 1)
  if #batch == 0 then
    break
  end
  for _, id in ipairs(batch) do
    local seen = tonumber(redis.call('ZSCORE', K_SEEN, id))
    local t = load(id)
    if not t or (counting and seen and seen <= cutoff) then
      if skips == 0 then
        break
      end
      skips = skips - 1
      drop(id)
    else
      redis.call('ZREM', K_WAITING, id)
      redis.call('ZREM', K_SEEN, id)
      t.adm = redis.call('HINCRBY', K_STATE, 'admitted_total', 1)
      t.state = 'ADMITTED'
      t.exp = now + c.session * 1000
      save(t)
      log_exit(t)
      redis.call('ZADD', K_ACTIVE, t.exp, id)
      redis.call('ZADD', K_ADMITS, now, t.adm)
      admitted = admitted + 1
    end
  end
end
tokens = tokens - admitted
redis.call('HSET', K_STATE, 'tokens', tostring(tokens), 'refilled_ms', refilled)
return {'OK', admitted}
