-- confirm_hold: turns a live hold into an appointment: its held seats become booked seats, its
-- passport and receipt claims name the appointment. Prepended with holds_lib.lua.
--
-- slotd reads the hold record first (its slot and applicants never change) to name every key;
-- the script re-checks that read (applicants verbatim) and answers STALE if it does not match.
--
-- KEYS[1]        hold record         slotd:{T}:hold:<HOLD_ID>
-- KEYS[2]        day hash            slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[3]        active index        slotd:{T}:active:<POST>:<CAT>:<DATE>
-- KEYS[4]        manifest zset       slotd:{T}:manifest:<POST>:<CAT>:<DATE>
-- KEYS[5]        appointment hash    slotd:{T}:appt:<CONF>            (the new number)
-- KEYS[6]        holds zset          slotd:{T}:holds:<POST>:<CAT>:<DATE>
-- KEYS[7]        due zset            slotd:{T}:holds-due
-- KEYS[8]        events stream       slotd:{T}:events
-- KEYS[7+2i]     receipt hash of applicant i (i = 1..n)
-- KEYS[8+2i]     passport record of applicant i
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        hold id
-- ARGV[3]        confirmation number of the new appointment
-- ARGV[4]        now, RFC 3339
-- ARGV[5]        applicants JSON as read
-- ARGV[6]        day label "<POST>:<CAT>:<DATE>"
-- ARGV[7]        manifest member "<MMMM>-<CONF>"
-- ARGV[8]        slot time HHMM
--
-- Returns {"OK"} | {"REPLAY", conf} (confirmed before) | {"HOLD_NOT_FOUND"} | {"STALE"}
--       | {"HOLD_EXPIRED", expires_ms} | {"HOLD_NOT_ACTIVE", status} | {"CONFIRMATION_TAKEN"}
--       | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- An accepted waitlist offer (hold field `entry`) ends its entry as FULFILLED.
--
-- Invariants: booked + held is unchanged by a confirm (held -n, booked +n); an expired hold
-- books nothing (its seats are reclaimed instead, once). Checks first, writes last; the only
-- write on a refusal is the HOLD_EXPIRED reclaim, which any script touching the date does.
local now = tonumber(ARGV[1])
if not now then
  return {'BAD_CALL', 'confirm_hold arguments'}
end
local hold_id = ARGV[2]
local conf = ARGV[3]
local hhmm = ARGV[8]

-- Checks.
local rec = redis.call('HMGET', KEYS[1], 'status', 'applicants', 'seats', 'expires_ms',
  'confirmation', 'post', 'category', 'date', 'time', 'entry')
if not rec[1] then
  return {'HOLD_NOT_FOUND'}
end
if rec[2] ~= ARGV[5] then
  return {'STALE'}
end
local n = tonumber(rec[3])
local expires = tonumber(rec[4])
if not n or not expires then
  return {'CORRUPT', 'hold record'}
end
if #KEYS ~= 8 + 2 * n then
  return {'BAD_CALL', 'confirm_hold keys'}
end
if rec[1] == 'CONFIRMED' then
  return {'REPLAY', rec[5]}
end
if rec[1] ~= 'HELD' then
  return {'HOLD_NOT_ACTIVE', rec[1]}
end
local expired = expired_holds(KEYS[6], now)
if not expired then
  return {'CORRUPT', 'holds member'}
end
local slot_prefix = rec[6] .. '/' .. rec[7] .. '/' .. rec[8]
if expires <= now then
  reclaim_holds(expired, KEYS[2], KEYS[6], KEYS[7], KEYS[8], ARGV[6], slot_prefix)
  return {'HOLD_EXPIRED', rec[4]}
end
local member = hhmm .. ':' .. n .. ':' .. hold_id
if not redis.call('ZSCORE', KEYS[6], member) then
  -- Already reclaimed by a replica whose clock runs ahead of ours: expired all the same.
  return {'HOLD_EXPIRED', rec[4]}
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {'CONFIRMATION_TAKEN'}
end

-- Writes.
reclaim_holds(expired, KEYS[2], KEYS[6], KEYS[7], KEYS[8], ARGV[6], slot_prefix)
redis.call('ZREM', KEYS[6], member)
redis.call('ZREM', KEYS[7], ARGV[6] .. ':' .. member)
local held = (tonumber(redis.call('HGET', KEYS[2], hhmm .. ':h') or '0') or 0) - n
if held < 0 then
  held = 0
end
redis.call('HSET', KEYS[2], hhmm .. ':h', held)
redis.call('HINCRBY', KEYS[2], hhmm .. ':b', n)
for i = 1, n do
  redis.call('HSET', KEYS[7 + 2 * i], 'backing', conf)
  redis.call('SET', KEYS[8 + 2 * i], conf)
end
redis.call('HSET', KEYS[5],
  'post', rec[6], 'category', rec[7], 'date', rec[8], 'time', rec[9],
  'status', 'BOOKED', 'seats', n, 'created_at', ARGV[4], 'updated_at', ARGV[4],
  'applicants', rec[2])
redis.call('HSET', KEYS[3], conf, hhmm .. ':' .. n)
redis.call('ZADD', KEYS[4], 0, ARGV[7])
redis.call('HSET', KEYS[1], 'status', 'CONFIRMED', 'confirmation', conf)
if rec[10] then
  local prefix = prefix_of(KEYS[7], 'holds-due')
  end_entry(prefix, rec[10], 'FULFILLED', nil, now)
  redis.call('HSET', prefix .. 'wle:' .. rec[10], 'confirmation', conf)
end
redis.call('XADD', KEYS[8], 'MAXLEN', '~', 1000000, '*',
  'type', 'booked', 'confirmation', conf, 'slot', slot_prefix .. ' ' .. rec[9],
  'seats', n, 'at', ARGV[4], 'hold', hold_id)
return {'OK'}
