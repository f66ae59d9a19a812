-- room_lib: shared prelude of every waiting-room function (functions.rs puts it at the start of
-- each room_* function's body, so it binds that call's KEYS).
--
-- KEYS, the same ten for every room script, all under the room's own hash tag {<tag>-room}:
--   KEYS[1] config   hash  enabled, rate (per minute), cap, session (s), timeout (s), paused, gate
--   KEYS[2] state    hash  last_number, admitted_total, expired_total, tokens, refilled_ms,
--                          enabled_since_ms (when the rate's observation began: the room's
--                          enabling or its last unpause), last_step_ms, resumed_ms, log_seq, swept_ms
--                          (room time of the last sweep), step_at (Redis TIME ms of the last
--                          step: the step lease, room_tick.lua)
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

-- The settings hash's seven fields, as stored (nil where the hash has none).
local function config_fields()
  return redis.call('HMGET', K_CONFIG, 'enabled', 'rate', 'cap', 'session', 'timeout', 'paused', 'gate')
end

-- The settings from config_fields(): the Rust defaults where a field is missing.
local function config_of(r)
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

local function config()
  return config_of(config_fields())
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

-- Heartbeats at `now` of the ticket ids ARGV[first..]: one multi-member ZADD XX GT (an ended
-- ticket is not brought back, a lagging clock never moves a heartbeat back). The score is
-- formatted once: a Lua number passed to redis.call is formatted anew per argument (%.14g, the
-- slow path of printf for a 13-digit millisecond), ~15 % of a heartbeat (benches/README.md §23).
local function heartbeat(now, first)
  if #ARGV < first then
    return
  end
  local args, score = {}, string.format('%d', now)
  for i = first, #ARGV do
    args[#args + 1] = score
    args[#args + 1] = ARGV[i]
  end
  redis.call('ZADD', K_SEEN, 'XX', 'GT', unpack(args))
end

-- Admissions per minute over the last minute, or since the observation began (the room's
-- enabling or its last unpause: state enabled_since_ms) if later, counting only the admissions
-- made since then; the configured rate until any admission is seen.
local function rate(c, now, enabled_since)
  local start = now - RATE_WINDOW_MS
  local since = tonumber(enabled_since)
  local from = '(' .. start
  if since and since > start then
    from = since
  end
  local seen = redis.call('ZCOUNT', K_ADMITS, from, '+inf')
  if seen == 0 then
    return c.rate
  end
  since = math.max(since or start, start)
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

-- One admission step at `now` under settings c (room_advance.lua, room_tick.lua; their headers
-- say what it does and why). Returns how many it admitted. Its fixed work is a few calls: the
-- state in one HMGET, the writes of all its admissions in one call per key, and the sweeps
-- (forgetting old ended tickets, trimming the admission and event logs) once per second of
-- room time, or at every step while a sweep finds a full bound of work.
local function step(c, now, bound, keep)
  local st = redis.call('HMGET', K_STATE, 'last_step_ms', 'resumed_ms', 'tokens', 'refilled_ms',
    'swept_ms')
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, bound)) do
    local t = load(id)
    if t then
      finish(t, 'EXPIRED', now)
    else
      redis.call('ZREM', K_ACTIVE, id)
    end
  end

  local last, resumed = tonumber(st[1]), tonumber(st[2])
  if not (last and resumed and now - last <= OUTAGE_GAP_MS) then
    resumed = now
  end
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

  local swept = tonumber(st[5])
  if not swept or now - swept >= 1000 or now < swept then
    local old = redis.call('ZRANGEBYSCORE', K_ENDED, '-inf', now - ENDED_TTL_MS, 'LIMIT', 0, bound)
    if #old > 0 then
      redis.call('HDEL', K_TICKETS, unpack(old))
      redis.call('ZREM', K_ENDED, unpack(old))
    end
    redis.call('ZREMRANGEBYSCORE', K_ADMITS, '-inf', now - RATE_WINDOW_MS)
    redis.call('ZREMRANGEBYRANK', K_LOG, 0, -(keep + 1))
    -- A full bound: more may be due, so the next step sweeps again.
    if #old < bound then
      swept = now
    end
  end

  local state = {'last_step_ms', math.max(now, last or now), 'resumed_ms', resumed}
  if swept then
    state[#state + 1] = 'swept_ms'
    state[#state + 1] = swept
  end
  if not c.enabled then
    redis.call('HSET', K_STATE, unpack(state))
    return 0
  end
  local tokens = tonumber(st[3]) or burst(c)
  local refilled = tonumber(st[4]) or now
  if now > refilled then
    tokens = math.min(burst(c), tokens + (now - refilled) * c.rate / 60000)
    refilled = now
  end
  local k = 0
  if not c.paused and tokens >= 1 then
    k = math.min(math.floor(tokens), math.max(0, c.cap - redis.call('ZCARD', K_ACTIVE)))
  end
  local admitted, skips = 0, bound
  while admitted < k and skips > 0 do
    local batch = redis.call('ZRANGE', K_WAITING, 0, k - admitted - 1)
    if #batch == 0 then
      break
    end
    local seen = redis.call('ZMSCORE', K_SEEN, unpack(batch))
    local packed = redis.call('HMGET', K_TICKETS, unpack(batch))
    local admit = {}
    for i, id in ipairs(batch) do
      local t = parse_ticket(id, packed[i])
      local s = tonumber(seen[i])
      if not t or (counting and s and s <= cutoff) then
        if skips == 0 then
          break
        end
        skips = skips - 1
        drop(id)
      else
        admit[#admit + 1] = t
      end
    end
    local n = #admit
    if n > 0 then
      -- Admission numbers and event sequence numbers in ticket-number order, after any drop
      -- of this batch (finish logged those already).
      local adm = redis.call('HINCRBY', K_STATE, 'admitted_total', n) - n
      local seq = redis.call('HINCRBY', K_STATE, 'log_seq', n) - n
      local ids, saved, logged, active, admits = {}, {}, {}, {}, {}
      -- Every admission of a step has the same expiry; numbers go in as strings made once.
      local exp = now + c.session * 1000
      local now_s, exp_s = string.format('%d', now), string.format('%d', exp)
      for i, t in ipairs(admit) do
        t.adm = adm + i
        t.state = 'ADMITTED'
        t.exp = exp
        ids[i] = t.id
        saved[#saved + 1] = t.id
        saved[#saved + 1] = string.format('%d|ADMITTED|%d|%s|%s', t.number, t.adm, exp_s, t.ck)
        logged[#logged + 1] = string.format('%d', seq + i)
        logged[#logged + 1] = string.format('%s|%d|ADMITTED|%d|%s', t.id, t.number, t.adm, exp_s)
        active[#active + 1] = exp_s
        active[#active + 1] = t.id
        admits[#admits + 1] = now_s
        admits[#admits + 1] = string.format('%d', t.adm)
      end
      redis.call('ZREM', K_WAITING, unpack(ids))
      redis.call('ZREM', K_SEEN, unpack(ids))
      redis.call('HSET', K_TICKETS, unpack(saved))
      redis.call('ZADD', K_LOG, unpack(logged))
      redis.call('ZADD', K_ACTIVE, unpack(active))
      redis.call('ZADD', K_ADMITS, unpack(admits))
      admitted = admitted + n
    end
  end
  state[#state + 1] = 'tokens'
  state[#state + 1] = tostring(tokens - admitted)
  state[#state + 1] = 'refilled_ms'
  state[#state + 1] = refilled
  redis.call('HSET', K_STATE, unpack(state))
  return admitted
end
