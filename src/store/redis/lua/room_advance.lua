-- room_advance: one admission step; every replica runs it a few times a second.
-- KEYS: the nine room keys (room_lib.lua).  ARGV[1] now ms
-- Returns {'OK', admitted} | {'BAD_CALL', detail}
-- Steps, in this order (so admission order is join order among live tickets):
--   1. end admitted sessions past their expiry;
--   2. drop waiters silent for the waiter timeout, counted from no earlier than the step that
--      followed a gap of more than 3 s (an outage: nobody could heartbeat meanwhile);
--   3. forget tickets ended over an hour ago, trim the admission log to the last minute;
--   4. refill the token bucket (one second's worth at most) and admit the lowest numbers, as
--      many as the tokens, the active cap and the queue allow (none while paused).
-- Invariant: over any t seconds at most burst + rate * t admissions; active <= cap.
local now = tonumber(ARGV[1])
if not now then
  return {'BAD_CALL', 'advance arguments'}
end
local c = config()

for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now)) do
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
if resumed <= cutoff then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_SEEN, '-inf', cutoff)) do
    local t = load(id)
    if t then
      finish(t, 'EXPIRED', now)
    else
      redis.call('ZREM', K_SEEN, id)
      redis.call('ZREM', K_WAITING, id)
    end
  end
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ENDED, '-inf', now - ENDED_TTL_MS, 'LIMIT', 0, 1000)) do
  redis.call('HDEL', K_TICKETS, id)
  redis.call('ZREM', K_ENDED, id)
end
redis.call('ZREMRANGEBYSCORE', K_ADMITS, '-inf', now - RATE_WINDOW_MS)

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
if k > 0 then
  for _, id in ipairs(redis.call('ZRANGE', K_WAITING, 0, k - 1)) do
    local t = load(id)
    redis.call('ZREM', K_WAITING, id)
    redis.call('ZREM', K_SEEN, id)
    if t then
      t.adm = redis.call('HINCRBY', K_STATE, 'admitted_total', 1)
      t.state = 'ADMITTED'
      t.exp = now + c.session * 1000
      save(t)
      redis.call('ZADD', K_ACTIVE, t.exp, id)
      redis.call('ZADD', K_ADMITS, now, t.adm)
    end
  end
  tokens = tokens - k
end
redis.call('HSET', K_STATE, 'tokens', tostring(tokens), 'refilled_ms', refilled)
return {'OK', k}
