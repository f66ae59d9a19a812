-- room_lib: shared prelude of every waiting-room function (functions.rs puts it at the start of
-- each room_* function's body, so it binds that call's KEYS).
--
-- KEYS, the same ten for every room script, all under the room's own hash tag {<tag>-room}:
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
--   KEYS[10] log     zset  "<id>|<number>|<state>|<admission_number>|<expires_ms>" -> event
--                          sequence (state log_seq): every ticket leaving the line (admitted,
--                          expired, left, revoked), once; the last ARGV-given number kept
-- Invariants: a ticket is in waiting+seen iff WAITING, in active iff ADMITTED, in clients iff
-- live; admission numbers grow by one per admission, in ticket-number order; a ticket leaves
-- waiting only through log_exit, so the log is every change to "who is ahead of whom".
if #KEYS ~= 10 then
  return {'BAD_CALL', 'room scripts take the ten room keys'}
end
local K_CONFIG, K_STATE, K_WAITING, K_SEEN, K_ACTIVE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_ADMITS, K_TICKETS, K_CLIENTS, K_ENDED = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K_LOG = KEYS[10]
-- RATE_WINDOW_MS, OUTAGE_GAP_MS, ENDED_TTL_MS and ROOM_DEFAULT_*: generated from Rust constants.

local function config()
  local r = redis.call('HMGET', K_CONFIG, 'enabled', 'rate', 'cap', 'session', 'timeout', 'paused', 'gate')
  return {
    enabled = tonumber(r[1]) == 1,
    rate = tonumber(r[2]) or ROOM_DEFAULT_RATE,
    cap = tonumber(r[3]) or ROOM_DEFAULT_CAP,
    session = tonumber(r[4]) or ROOM_DEFAULT_SESSION_SECS,
    timeout = tonumber(r[5]) or ROOM_DEFAULT_TIMEOUT_SECS,
    paused = tonumber(r[6]) == 1,
    gate = tonumber(r[7]) == 1,
  }
end

local function burst(c)
  return math.max(1, c.rate / 60)
end

-- A ticket from its packed field (as HGET/HMGET of K_TICKETS answer it), or nil.
local function parse_ticket(id, packed)
  if not packed then
    return nil
  end
  local number, state, adm, exp, ck = string.match(packed, '^(%d+)|(%u+)|(%d+)|(%d+)|(.+)$')
  if not number then
    return nil
  end
  return {id = id, number = tonumber(number), state = state, adm = tonumber(adm), exp = tonumber(exp), ck = ck}
end

local function load(id)
  return parse_ticket(id, redis.call('HGET', K_TICKETS, id))
end

local function save(t)
  redis.call('HSET', K_TICKETS, t.id,
    string.format('%d|%s|%d|%d|%s', t.number, t.state, t.adm, t.exp, t.ck))
end

local function live(t)
  return t.state == 'WAITING' or t.state == 'ADMITTED'
end

-- Appends "t left the line, as t.state" to the event log.
local function log_exit(t)
  local seq = redis.call('HINCRBY', K_STATE, 'log_seq', 1)
  redis.call('ZADD', K_LOG, seq, string.format('%s|%d|%s|%d|%d', t.id, t.number, t.state, t.adm, t.exp))
end

-- Ends a live ticket as `state` (EXPIRED, LEFT, COMPLETED, REVOKED); an ended one stays.
local function finish(t, state, now)
  if not live(t) then
    return
  end
  local was_waiting = t.state == 'WAITING'
  if was_waiting then
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
  if was_waiting then
    log_exit(t)
  end
end

-- Admissions per minute over the last minute (since enabling, if later); the configured rate
-- until any admission is seen.
local function rate(c, now, enabled_since)
  local seen = redis.call('ZCOUNT', K_ADMITS, '(' .. (now - RATE_WINDOW_MS), '+inf')
  if seen == 0 then
    return c.rate
  end
  local since = tonumber(enabled_since) or (now - RATE_WINDOW_MS)
  since = math.max(since, now - RATE_WINDOW_MS)
  local window = math.max(1000, now - since)
  return seen * 60000 / window
end

-- {'OK', id, client_key, number, state, ahead, admission_number, expires_ms, rate, log_seq}
-- `ahead` may be given (a fresh join knows it: everyone waiting is ahead).
local function view(t, c, now, ahead)
  if t.state ~= 'WAITING' then
    ahead = 0
  elseif not ahead then
    ahead = redis.call('ZCOUNT', K_WAITING, '-inf', '(' .. t.number)
  end
  local s = redis.call('HMGET', K_STATE, 'enabled_since_ms', 'log_seq')
  return {'OK', t.id, t.ck, t.number, t.state, ahead, t.adm, t.exp, tostring(rate(c, now, s[1])),
    tonumber(s[2]) or 0}
end
