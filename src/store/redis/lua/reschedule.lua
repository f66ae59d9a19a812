-- reschedule: moves a whole appointment to another slot in ONE script, keeping its
-- confirmation number. Every booking key shares one hash tag, so both dates are reachable here:
-- there is no saga and no moment at which the group holds both slots or neither.
-- Uses holds_lib.lua helpers.
--
-- slotd reads the appointment first (to name the old date's keys and the receipts); the script
-- re-checks that read (applicants verbatim and the current slot) and answers STALE if either
-- changed, and slotd reads again.
--
-- KEYS[1]        appointment hash    slotd:{T}:appt:<CONF>
-- KEYS[2]        idempotency record  slotd:{T}:idem:reschedule:<REQUEST_ID>
-- KEYS[3]        events stream       slotd:{T}:events
-- KEYS[4]        old day hash        slotd:{T}:day:<POST>:<CAT>:<OLD_DATE>
-- KEYS[5]        old active index    slotd:{T}:active:<POST>:<CAT>:<OLD_DATE>
-- KEYS[6]        new day hash        slotd:{T}:day:<POST>:<CAT>:<NEW_DATE>
-- KEYS[7]        new active index    slotd:{T}:active:<POST>:<CAT>:<NEW_DATE>
-- KEYS[8]        new holds zset      slotd:{T}:holds:<POST>:<CAT>:<NEW_DATE>
-- KEYS[9]        due zset            slotd:{T}:holds-due
-- KEYS[9+i]      receipt hash of applicant i (i = 1..n)
-- KEYS[10+n]     admission hash      slotd:{T}:admission:<TICKET_ID>  (only for a move under a
--                waiting-room admission: the move is one of its counted steps, holds_lib.lua)
-- (old and new keys are the same keys when the move stays on one date)
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        request fingerprint (hex)
-- ARGV[3]        confirmation number
-- ARGV[4]        idempotency TTL, seconds
-- ARGV[5]        now, RFC 3339
-- ARGV[6]        applicants JSON as read
-- ARGV[7]        "1" if the requesting passport is one of the applicants, else "0"
-- ARGV[8]        old slot label "<POST>/<CAT>/<DATE> <HH:MM>" as read
-- ARGV[9]        new slot label
-- ARGV[10]       old HHMM, ARGV[11] new HHMM
-- ARGV[12]       reschedule limit per receipt
-- ARGV[13]       new day label "<POST>:<CAT>:<DATE>" (due members)
-- ARGV[14..17]   new post, category, date, time HH:MM (stored in the appointment)
-- ARGV[18]       history line appended: "<old label>|<new label>|<now RFC 3339>"
-- ARGV[19..23]   offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold
--                record TTL s, nonce (hex, 128 random bits; offer hold ids derive from it)
-- ARGV[24]       steps one admission may make (with KEYS[10+n] only; the count's TTL is ARGV[4])
--
-- Returns {"OK"} | {"REPLAY", conf} | {"REQUEST_ID_REUSED"} | {"APPOINTMENT_NOT_FOUND"}
--       | {"ADMISSION_USED"} | {"EXHAUSTED", limit} (the admission booked / made its steps)
--       | {"STALE"} | {"APPOINTMENT_CANCELLED"} | {"APPOINTMENT_PASSED"} | {"RESCHEDULE_SAME_SLOT"}
--       | {"SLOT_NOT_FOUND"} | {"SLOT_CLOSED"} | {"SLOT_FULL", remaining}
--       | {"RESCHEDULE_LIMIT", i} | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- Invariants: the group's seats leave the old slot and enter the new one in the same script
-- (booked totals unchanged); booked + held <= capacity on the new slot counting only live holds;
-- each receipt backs at most `limit` moves; the old slot's seats go to its waitlist first. Every check runs before the first write, so a
-- refusal (or a crash before the script runs) leaves the appointment wholly on its old slot.
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[4])
local limit = tonumber(ARGV[12])
local o = offer_context(19, now)
if not now or not ttl or not limit or not o or (#ARGV ~= 23 and #ARGV ~= 24) then
  return {'BAD_CALL', 'reschedule arguments'}
end
-- Under an admission: its limit and (checked with the keys below) KEYS[10+n].
local step_limit = nil
if #ARGV == 24 then
  step_limit = tonumber(ARGV[24])
  if not step_limit then
    return {'BAD_CALL', 'reschedule arguments'}
  end
end
local conf = ARGV[3]

-- Checks.
local seen = remembered(KEYS[2], now)
if seen == false then
  return {'CORRUPT', 'idempotency record'}
end
if seen then
  if seen[1] ~= ARGV[2] then
    return {'REQUEST_ID_REUSED'}
  end
  return {'REPLAY', seen[2]}
end
local admission = nil
if step_limit then
  admission = KEYS[#KEYS]
end
local step_refused = admission_step_refusal(admission, step_limit)
if step_refused then
  return step_refused
end

local appt = redis.call('HMGET', KEYS[1], 'status', 'applicants', 'seats', 'post', 'category',
  'date', 'time', 'history', 'retired')
if not appt[1] then
  return {'APPOINTMENT_NOT_FOUND'}
end
local current = appt[4] .. '/' .. appt[5] .. '/' .. appt[6] .. ' ' .. appt[7]
if appt[2] ~= ARGV[6] or current ~= ARGV[8] then
  return {'STALE'}
end
local n = tonumber(appt[3])
if not n or #KEYS ~= 9 + n + (step_limit and 1 or 0) then
  return {'BAD_CALL', 'reschedule keys'}
end
if ARGV[7] ~= '1' then
  return {'APPOINTMENT_NOT_FOUND'}
end
if appt[1] == 'CANCELLED' then
  return {'APPOINTMENT_CANCELLED'}
end
-- Retired (past, appt_retire.lua): its passports are free again, so it never moves.
if appt[9] then
  return {'APPOINTMENT_PASSED'}
end
if ARGV[9] == current then
  return {'RESCHEDULE_SAME_SLOT'}
end

local new_hhmm = ARGV[11]
local slot = redis.call('HMGET', KEYS[6], new_hhmm .. ':c', new_hhmm .. ':b', new_hhmm .. ':x',
  new_hhmm .. ':h')
if not slot[1] then
  return {'SLOT_NOT_FOUND'}
end
if slot[3] == '1' then
  return {'SLOT_CLOSED'}
end
local expired, expired_by_hhmm = expired_holds(KEYS[8], now)
if not expired then
  return {'CORRUPT', 'holds member'}
end
local capacity = tonumber(slot[1])
local booked = tonumber(slot[2] or '0')
local held = tonumber(slot[4] or '0')
if not capacity or not booked or not held then
  return {'CORRUPT', 'slot counters'}
end
local remaining = capacity - booked - (held - (expired_by_hhmm[new_hhmm] or 0))
if remaining < 0 then
  remaining = 0
end
if remaining < n then
  return {'SLOT_FULL', remaining}
end
for i = 1, n do
  local used = tonumber(redis.call('HGET', KEYS[9 + i], 'reschedules') or '0')
  if not used then
    return {'CORRUPT', 'receipt reschedules'}
  end
  if used >= limit then
    return {'RESCHEDULE_LIMIT', i}
  end
end

-- Writes: nothing below can be refused.
reclaim_holds(expired, KEYS[6], KEYS[8], KEYS[9], KEYS[3], ARGV[13],
  ARGV[14] .. '/' .. ARGV[15] .. '/' .. ARGV[16])
local old_hhmm = ARGV[10]
local old_booked = (tonumber(redis.call('HGET', KEYS[4], old_hhmm .. ':b') or '0') or 0) - n
if old_booked < 0 then
  old_booked = 0
end
redis.call('HSET', KEYS[4], old_hhmm .. ':b', old_booked)
redis.call('HINCRBY', KEYS[6], new_hhmm .. ':b', n)
redis.call('HDEL', KEYS[5], conf)
redis.call('HSET', KEYS[7], conf, new_hhmm .. ':' .. n)
for i = 1, n do
  redis.call('HINCRBY', KEYS[9 + i], 'reschedules', 1)
end
count_admission_step(admission, ttl)
redis.call('HSET', KEYS[1], 'post', ARGV[14], 'category', ARGV[15], 'date', ARGV[16],
  'time', ARGV[17], 'updated_at', ARGV[5], 'history', (appt[8] or '') .. ARGV[18] .. '\n')
redis.call('SET', KEYS[2],
  ARGV[2] .. '|' .. conf .. '|' .. string.format('%.0f', now + ttl * 1000), 'EX', ttl)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'moved', 'confirmation', conf, 'from', current, 'to', ARGV[9], 'seats', n,
  'at', ARGV[5])
-- The seats left behind go to the old date's waitlist first.
offer_seats(o, appt[4], appt[5], appt[6], old_hhmm, n, nil)
return {'OK'}
