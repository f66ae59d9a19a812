-- confirm_hold: turns a live hold into an appointment: its held seats become booked seats, its
-- passport and receipt claims name the appointment. Uses holds_lib.lua helpers.
--
-- slotd reads the hold record first (its slot and applicants never change) to name every key;
-- the script re-checks that read (applicants verbatim) and answers STALE if it does not match.
--
-- KEYS[1]        hold record         slotd:{T}:hold:<HOLD_ID>
-- KEYS[2]        day hash            slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[3]        active index        slotd:{T}:active:<POST>:<CAT>:<DATE>
-- KEYS[4]        appointment hash    slotd:{T}:appt:<CONF>            (the new number)
-- KEYS[5]        holds zset          slotd:{T}:holds:<POST>:<CAT>:<DATE>
-- KEYS[6]        due zset            slotd:{T}:holds-due
-- KEYS[7]        events stream       slotd:{T}:events
-- KEYS[6+2i]     receipt hash of applicant i (i = 1..n)
-- KEYS[7+2i]     passport record of applicant i
-- KEYS[8+2n]     admission hash      slotd:{T}:admission:<TICKET_ID>  (only for a call under a
--                waiting-room admission; see book.lua)
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        hold id
-- ARGV[3]        confirmation number of the new appointment
-- ARGV[4]        now, RFC 3339
-- ARGV[5]        applicants JSON as read
-- ARGV[6]        day label "<POST>:<CAT>:<DATE>"
-- ARGV[7]        slot time HHMM
-- ARGV[8..12]    offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold
--                record TTL s, nonce (hex, 128 random bits; offer hold ids derive from it)
-- ARGV[13]       admission record TTL, seconds (with KEYS[8+2n] only)
--
-- Returns {"OK"} | {"REPLAY", conf} (confirmed before) | {"HOLD_NOT_FOUND"} | {"STALE"}
--       | {"HOLD_EXPIRED", expires_ms} | {"HOLD_NOT_ACTIVE", status} | {"CONFIRMATION_TAKEN"}
--       | {"ADMISSION_USED"} (the admission booked before: one admission books once)
--       | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- An accepted waitlist offer (hold field `entry`) ends its entry as FULFILLED. An offer to a
-- moving entry (entry field `moves`) is a reschedule instead: the entry's appointment moves
-- onto the held seats (same number, history line, reschedule counted), answered
-- {"MOVED", conf}; its old seats go to that date's line (offer step). Refusals then are
-- {"APPOINTMENT_CANCELLED", conf} | {"RESCHEDULE_LIMIT", i, limit}, and final: the offer's seats
-- come back at once (and go to the next entries), the entry ends CANCELLED with that reason.
--
-- Invariants: booked + held is unchanged by a confirm (held -n, booked +n); a hold whose
-- passport or receipt claim no longer reads "hold:<HOLD_ID>:<expires_ms>" books nothing
-- (HOLD_EXPIRED, no write); an expired hold books nothing (its seats are reclaimed instead, once). Checks first, writes last; the only
-- write on a refusal is the HOLD_EXPIRED reclaim, which any script touching the date does, and
-- a moving offer's final refusal (above).
local now = tonumber(ARGV[1])
local o = offer_context(8, now)
if not now or not o then
  return {'BAD_CALL', 'confirm_hold arguments'}
end
local hold_id = ARGV[2]
local conf = ARGV[3]
local hhmm = ARGV[7]

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
local admission = nil
if #KEYS == 8 + 2 * n and #ARGV == 13 then
  admission = KEYS[8 + 2 * n]
elseif #KEYS ~= 7 + 2 * n then
  return {'BAD_CALL', 'confirm_hold keys'}
end
if rec[1] == 'CONFIRMED' then
  return {'REPLAY', rec[5]}
end
if rec[1] ~= 'HELD' then
  return {'HOLD_NOT_ACTIVE', rec[1]}
end
local expired = expired_holds(KEYS[5], now)
if not expired then
  return {'CORRUPT', 'holds member'}
end
local slot_prefix = rec[6] .. '/' .. rec[7] .. '/' .. rec[8]
if expires <= now then
  reclaim_holds(expired, KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[6], slot_prefix)
  return {'HOLD_EXPIRED', rec[4]}
end
local member = hhmm .. ':' .. n .. ':' .. hold_id
if not redis.call('ZSCORE', KEYS[5], member) then
  -- Already reclaimed by a replica whose clock runs ahead of ours: expired all the same.
  return {'HOLD_EXPIRED', rec[4]}
end
if admission and redis.call('HEXISTS', admission, 'booked') == 1 then
  return {'ADMISSION_USED'}
end
local function record_admission(booked)
  if admission then
    redis.call('HSET', admission, 'booked', booked)
    redis.call('EXPIRE', admission, tonumber(ARGV[13]))
  end
end
local prefix = o.prefix
local entry_key = rec[10] and (prefix .. 'wle:' .. rec[10])
local moves = entry_key and redis.call('HGET', entry_key, 'moves')
if moves then
  -- Checks of the move.
  local appt_key = prefix .. 'appt:' .. moves
  local a = redis.call('HMGET', appt_key, 'status', 'post', 'category', 'date', 'time',
    'history', 'retired')
  if not a[1] then
    return {'CORRUPT', 'moving entry names a missing appointment'}
  end
  -- A refusal is final for the entry: the offer's seats come back at once and go on to the
  -- next entries, the entry ends (these writes are the refusal's whole outcome).
  -- A retired (past) appointment never moves again either, as a cancelled one.
  if a[1] ~= 'BOOKED' or a[7] then
    cancel_moving_entry(o, rec[10], 'APPOINTMENT_CANCELLED')
    return {'APPOINTMENT_CANCELLED', moves}
  end
  local limit = tonumber(redis.call('HGET', entry_key, 'limit') or '0') or 0
  for i = 1, n do
    local used = tonumber(redis.call('HGET', KEYS[6 + 2 * i], 'reschedules') or '0') or 0
    if used >= limit then
      cancel_moving_entry(o, rec[10], 'RESCHEDULE_LIMIT')
      return {'RESCHEDULE_LIMIT', i, limit}
    end
  end
  -- Writes: the held seats become the appointment's, its old seats return.
  reclaim_holds(expired, KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[6], slot_prefix)
  redis.call('ZREM', KEYS[5], member)
  redis.call('ZREM', KEYS[6], ARGV[6] .. ':' .. member)
  local held = (tonumber(redis.call('HGET', KEYS[2], hhmm .. ':h') or '0') or 0) - n
  if held < 0 then
    held = 0
  end
  redis.call('HSET', KEYS[2], hhmm .. ':h', held)
  redis.call('HINCRBY', KEYS[2], hhmm .. ':b', n)
  local old_day = a[2] .. ':' .. a[3] .. ':' .. a[4]
  local old_hhmm = string.sub(a[5], 1, 2) .. string.sub(a[5], 4, 5)
  local old_booked = (tonumber(redis.call('HGET', prefix .. 'day:' .. old_day, old_hhmm .. ':b')
    or '0') or 0) - n
  if old_booked < 0 then
    old_booked = 0
  end
  redis.call('HSET', prefix .. 'day:' .. old_day, old_hhmm .. ':b', old_booked)
  redis.call('HDEL', prefix .. 'active:' .. old_day, moves)
  redis.call('HSET', KEYS[3], moves, hhmm .. ':' .. n)
  for i = 1, n do
    redis.call('HINCRBY', KEYS[6 + 2 * i], 'reschedules', 1)
  end
  local from = a[2] .. '/' .. a[3] .. '/' .. a[4] .. ' ' .. a[5]
  local to = slot_prefix .. ' ' .. rec[9]
  redis.call('HSET', appt_key, 'post', rec[6], 'category', rec[7], 'date', rec[8],
    'time', rec[9], 'updated_at', ARGV[4],
    'history', (a[6] or '') .. from .. '|' .. to .. '|' .. ARGV[4] .. '\n')
  redis.call('HSET', KEYS[1], 'status', 'CONFIRMED', 'confirmation', moves)
  end_entry(prefix, rec[10], 'FULFILLED', nil, now)
  redis.call('HSET', entry_key, 'confirmation', moves)
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
    'type', 'moved', 'confirmation', moves, 'from', from, 'to', to, 'seats', n,
    'at', ARGV[4], 'hold_ref', hold_ref(hold_id))
  offer_seats(o, a[2], a[3], a[4], old_hhmm, n, nil)
  record_admission(moves)
  return {'MOVED', moves}
end
-- Compare-and-set: the hold's passport and receipt claims become the appointment's only while
-- they still name this hold. A replica whose clock runs ahead may have judged the claim lapsed
-- and given it to another booking or hold; then this hold has expired for good, whatever our
-- clock says, and books nothing (one passport, one receipt: at most one live appointment).
local claim = 'hold:' .. hold_id .. ':' .. rec[4] .. '|'
for i = 1, n do
  if redis.call('GET', KEYS[7 + 2 * i]) ~= claim .. receipt_no(KEYS[6 + 2 * i]) then
    return {'HOLD_EXPIRED', rec[4]}
  end
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {'CONFIRMATION_TAKEN'}
end

-- Writes.
reclaim_holds(expired, KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[6], slot_prefix)
redis.call('ZREM', KEYS[5], member)
redis.call('ZREM', KEYS[6], ARGV[6] .. ':' .. member)
local held = (tonumber(redis.call('HGET', KEYS[2], hhmm .. ':h') or '0') or 0) - n
if held < 0 then
  held = 0
end
redis.call('HSET', KEYS[2], hhmm .. ':h', held)
redis.call('HINCRBY', KEYS[2], hhmm .. ':b', n)
for i = 1, n do
  redis.call('SET', KEYS[7 + 2 * i], conf .. '|' .. receipt_no(KEYS[6 + 2 * i]))
end
redis.call('HSET', KEYS[4],
  'post', rec[6], 'category', rec[7], 'date', rec[8], 'time', rec[9],
  'status', 'BOOKED', 'seats', n, 'created_at', ARGV[4], 'updated_at', ARGV[4],
  'applicants', rec[2])
redis.call('HSET', KEYS[3], conf, hhmm .. ':' .. n)
redis.call('HSET', KEYS[1], 'status', 'CONFIRMED', 'confirmation', conf)
if entry_key then
  end_entry(prefix, rec[10], 'FULFILLED', nil, now)
  redis.call('HSET', entry_key, 'confirmation', conf)
end
redis.call('XADD', KEYS[7], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'booked', 'confirmation', conf, 'slot', slot_prefix .. ' ' .. rec[9],
  'seats', n, 'at', ARGV[4], 'hold_ref', hold_ref(hold_id))
record_admission(conf)
return {'OK'}
