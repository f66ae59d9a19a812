-- room_lib: shared prelude of every waiting-room script (slotd prepends it when loading).
--
-- KEYS, the same nine for every room script, all under the room's own hash tag {<tag>-room}:
--   KEYS[1] config   hash  enabled, rate (per minute), cap, session (s), timeout (s), paused, gate
--   KEYS[2] state    hash  last_number, admitted_total, expired_total, tokens, refilled_ms,
--                          enabled_since_ms, last_step_ms, resumed_ms
--   KEYS[3] waiting  zset  ticket id -> ticket number (live waiters, join order)
--   KEYS[4] seen     zset  ticket id -> last heartbeat ms (waiters only)
--   KEYS[5] active   zset  ticket id -> session expiry ms (admitted sessions)
--   KEYS[6] admits   zset  admission number -> admission ms (the last minute, for the rate)
--   KEYS[7] tickets  hash  ticket id -> "number|state|admission_number|expires_ms|client_key"
--   KEYS[8] clients  hash  client key -> ticket id (live tickets only)
--   KEYS[9] ended    zset  ticket id -> end ms (forgotten after an hour)
-- Invariants: a ticket is in waiting+seen iff WAITING, in active iff ADMITTED, in clients iff
-- live; admission numbers grow by one per admission, in ticket-number order.
if #KEYS ~= 9 then
  return {'BAD_CALL', 'room scripts take the nine room keys'}
end
local K_CONFIG, K_STATE, K_WAITING, K_SEEN, K_ACTIVE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_ADMITS, K_TICKETS, K_CLIENTS, K_ENDED = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local RATE_WINDOW_MS = 60000
local OUTAGE_GAP_MS = 3000
local ENDED_TTL_MS = 3600000

local function config()
  local r = redis.call('HMGET', K_CONFIG, 'enabled', 'rate', 'cap', 'session', 'timeout', 'paused', 'gate')
  return {
    enabled = tonumber(r[1]) == 1,
    rate = tonumber(r[2]) or 600,
    cap = tonumber(r[3]) or 1000,
    session = tonumber(r[4]) or 600,
    timeout = tonumber(r[5]) or 60,
    paused = tonumber(r[6]) == 1,
    gate = tonumber(r[7]) == 1,
  }
end

local function burst(c)
  return math.max(1, c.rate / 60)
end

local function load(id)
  local packed = redis.call('HGET', K_TICKETS, id)
  if not packed then
    return nil
  end
  local number, state, adm, exp, ck = string.match(packed, '^(%d+)|(%u+)|(%d+)|(%d+)|(.+)$')
  if not number then
    return nil
  end
  return {id = id, number = tonumber(number), state = state, adm = tonumber(adm), exp = tonumber(exp), ck = ck}
end

local function save(t)
  redis.call('HSET', K_TICKETS, t.id,
    string.format('%d|%s|%d|%d|%s', t.number, t.state, t.adm, t.exp, t.ck))
end

local function live(t)
  return t.state == 'WAITING' or t.state == 'ADMITTED'
end

-- Ends a live ticket as `state` (EXPIRED, LEFT, COMPLETED, REVOKED); an ended one stays.
local function finish(t, state, now)
  if not live(t) then
    return
  end
  if t.state == 'WAITING' then
    redis.call('ZREM', K_WAITING, t.id)
    redis.call('ZREM', K_SEEN, t.id)
  end
  redis.call('ZREM', K_ACTIVE, t.id)
  if state == 'EXPIRED' then
    redis.call('HINCRBY', K_STATE, 'expired_total', 1)
  end
  t.state = state
  save(t)
  if redis.call('HGET', K_CLIENTS, t.ck) == t.id then
    redis.call('HDEL', K_CLIENTS, t.ck)
  end
  redis.call('ZADD', K_ENDED, now, t.id)
end

-- Admissions per minute over the last minute (since enabling, if later); the configured rate
-- until any admission is seen.
local function rate(c, now)
  local seen = redis.call('ZCOUNT', K_ADMITS, '(' .. (now - RATE_WINDOW_MS), '+inf')
  if seen == 0 then
    return c.rate
  end
  local since = tonumber(redis.call('HGET', K_STATE, 'enabled_since_ms')) or (now - RATE_WINDOW_MS)
  since = math.max(since, now - RATE_WINDOW_MS)
  local window = math.max(1000, now - since)
  return seen * 60000 / window
end

-- {'OK', id, client_key, number, state, ahead, admission_number, expires_ms, rate}
local function view(t, c, now)
  local ahead = 0
  if t.state == 'WAITING' then
    ahead = redis.call('ZCOUNT', K_WAITING, '-inf', '(' .. t.number)
  end
  return {'OK', t.id, t.ck, t.number, t.state, ahead, t.adm, t.exp, tostring(rate(c, now))}
end
