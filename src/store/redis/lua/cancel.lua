-- cancel: cancels a whole appointment, returning its seats, receipts and passports exactly once.
--
-- slotd reads the appointment first (its slot and applicants never change after booking) to
-- name every key this script touches; the script re-checks that read against the stored
-- applicants and answers STALE when it does not match, and slotd reads again.
--
-- KEYS[1]        appointment hash    slotd:{T}:appt:<CONF>
-- KEYS[2]        idempotency record  slotd:{T}:idem:cancel:<REQUEST_ID>
-- KEYS[3]        events stream       slotd:{T}:events
-- when the appointment was found (ARGV[6] == "1"), also:
-- KEYS[4]        day hash            slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[5]        active index        slotd:{T}:active:<POST>:<CAT>:<DATE>
-- KEYS[4+2i]     receipt hash of applicant i (i = 1..n)
-- KEYS[5+2i]     passport record of applicant i
-- KEYS[6+2n]     cancelled index     slotd:{T}:cancelled:<POST>:<CAT>:<DATE>  (n = seats)
-- KEYS[#KEYS]    admission hash      slotd:{T}:admission:<TICKET_ID>  (only for a cancellation
--                under a waiting-room admission, after every other key: it is one of the
--                admission's counted steps, holds_lib.lua)
-- ARGV[1]        now, ms since the epoch
-- ARGV[2]        request fingerprint (hex)
-- ARGV[3]        confirmation number
-- ARGV[4]        idempotency TTL, seconds
-- ARGV[5]        now, RFC 3339 (stored as updated_at)
-- ARGV[6]        "1" if slotd's read found the appointment, else "0"
-- ARGV[7]        applicants JSON as read (compared verbatim with the stored one)
-- ARGV[8]        "1" if the requesting passport is one of the applicants, else "0"
-- ARGV[9]        slot time HHMM
-- ARGV[10]       slot label "<POST>/<CAT>/<DATE> <HH:MM>" as read (a reschedule in between
--                makes the read STALE: the day keys named would be the old date's)
-- ARGV[11..15]   offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold
--                record TTL s, nonce (hex, 128 random bits; offer hold ids derive from it)
-- ARGV[16]       retention, ms (booking.retention_days): the cancelled record and the day's
--                cancelled index expire this long after the cancellation
-- ARGV[17]       manifest member "<MMMM>-<CONF>" as read (its cancelled index member)
-- ARGV[18]       steps one admission may make (with the admission key only; the count's TTL is
--                ARGV[4])
--
-- Returns {"OK"} | {"REPLAY", conf} | {"REQUEST_ID_REUSED"} | {"APPOINTMENT_NOT_FOUND"}
--       | {"ADMISSION_USED"} | {"EXHAUSTED", limit} (the admission booked / made its steps)
--       | {"APPOINTMENT_CANCELLED"} | {"APPOINTMENT_PASSED"} (retired: appt_retire.lua) | {"STALE"} | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- Invariants: seats return exactly once (a cancelled or retired appointment is refused before any
-- write);
-- a passport or receipt claim is freed only if it still names this appointment;
-- booked never goes below 0; the appointment leaves the active index (the manifest's live
-- part) and joins the day's cancelled index; the record expires after the retention; the seats go to the date's waitlist first (offer_seats, in the
-- same script); checks first, writes last. Uses holds_lib.lua helpers.
local now = tonumber(ARGV[1])
local fingerprint = ARGV[2]
local conf = ARGV[3]
local ttl = tonumber(ARGV[4])
local now_text = ARGV[5]
local o = offer_context(11, now)
local retention = tonumber(ARGV[16])
local member = ARGV[17]
if not now or not ttl or not o or not retention or retention < 1
    or (#ARGV ~= 17 and #ARGV ~= 18) then
  return {'BAD_CALL', 'cancel arguments'}
end
-- Under an admission: its limit, and its key after every other key.
local admission, step_limit, extra = nil, nil, 0
if #ARGV == 18 then
  admission, step_limit, extra = KEYS[#KEYS], tonumber(ARGV[18]), 1
  if not step_limit then
    return {'BAD_CALL', 'cancel arguments'}
  end
end

-- Checks.
local seen = remembered(KEYS[2], now)
if seen == false then
  return {'CORRUPT', 'idempotency record'}
end
if seen then
  if seen[1] ~= fingerprint then
    return {'REQUEST_ID_REUSED'}
  end
  return {'REPLAY', seen[2]}
end
local step_refused = admission_step_refusal(admission, step_limit)
if step_refused then
  return step_refused
end

local appt = redis.call('HMGET', KEYS[1], 'status', 'applicants', 'seats', 'post', 'category',
  'date', 'time', 'retired')
if not appt[1] then
  if ARGV[6] == '1' then
    return {'CORRUPT', 'appointment vanished'}
  end
  return {'APPOINTMENT_NOT_FOUND'}
end
local current = (appt[4] or '') .. '/' .. (appt[5] or '') .. '/' .. (appt[6] or '') .. ' '
  .. (appt[7] or '')
if ARGV[6] ~= '1' or appt[2] ~= ARGV[7] or current ~= ARGV[10] then
  return {'STALE'}
end
local seats = tonumber(appt[3])
if not seats or #KEYS ~= 6 + 2 * seats + extra or string.sub(member or '', 6) ~= conf then
  return {'BAD_CALL', 'cancel keys'}
end
if ARGV[8] ~= '1' then
  return {'APPOINTMENT_NOT_FOUND'}
end
if appt[1] == 'CANCELLED' then
  return {'APPOINTMENT_CANCELLED'}
end
-- Retired (past, appt_retire.lua): its seats and passports were given back already.
if appt[8] then
  return {'APPOINTMENT_PASSED'}
end

-- Writes.
count_admission_step(admission, ttl)
local hhmm = ARGV[9]
local slot = redis.call('HMGET', KEYS[4], hhmm .. ':c', hhmm .. ':b')
if slot[1] then
  local booked = (tonumber(slot[2] or '0') or 0) - seats
  if booked < 0 then
    booked = 0
  end
  redis.call('HSET', KEYS[4], hhmm .. ':b', booked)
end
redis.call('HDEL', KEYS[5], conf)
-- Compare-and-set: a claim is freed only while it still names this appointment (never one a
-- later booking or hold took).
for i = 1, seats do
  if redis.call('GET', KEYS[5 + 2 * i]) == conf .. '|' .. receipt_no(KEYS[4 + 2 * i]) then
    redis.call('DEL', KEYS[5 + 2 * i])
  end
end
redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'updated_at', now_text)
-- Retention: the record stays readable (CANCELLED) for the retention, then expires; the
-- active index keeps live appointments only, the cancelled index (for listings with cancelled
-- ones) expires with the latest cancelled record it names.
redis.call('PEXPIRE', KEYS[1], retention)
redis.call('ZADD', KEYS[6 + 2 * seats], 0, member)
redis.call('PEXPIRE', KEYS[6 + 2 * seats], retention)
redis.call('SET', KEYS[2],
  fingerprint .. '|' .. conf .. '|' .. string.format('%.0f', now + ttl * 1000), 'EX', ttl)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'cancelled', 'confirmation', conf, 'slot', current, 'seats', seats, 'at', now_text)
-- The entry that waited to move this appointment can never move it: it ends now, and the
-- seats of its pending offer come back at once. Its passports name it (wlp:<PASSPORT>).
for i = 1, seats do
  local passport = string.sub(KEYS[5 + 2 * i], #o.prefix + #'passport:' + 1)
  local waiting = redis.call('GET', o.prefix .. 'wlp:' .. passport)
  if waiting and redis.call('HGET', o.prefix .. 'wle:' .. waiting, 'moves') == conf then
    cancel_moving_entry(o, waiting, 'APPOINTMENT_CANCELLED')
  end
end
offer_seats(o, appt[4], appt[5], appt[6], hhmm, seats, nil)
return {'OK'}
