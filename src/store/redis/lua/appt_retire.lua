-- appt_retire: retires one BOOKED appointment of a day that has passed everywhere (the sweeper,
-- a bounded batch of calls per run; see Inventory::retire_past_appointments). It leaves the
-- day's active index (the manifest's live part) and its seats the day's booked count (so the audit's
-- "booked == seats of active appointments" still holds), every passport claim that still names
-- it is freed, its receipts become spent for good (`backing` = it: the MRV fee paid for this
-- interview is used), and its record stays readable (BOOKED, field `retired`) until
-- retire-at + retention, when appt_expire.lua forgets it (PEXPIRE one day later is a backstop
-- should no sweeper run).
--
-- slotd reads the appointment first (HGETALL) to name its passport keys; the script re-checks
-- that read and answers STALE when it no longer matches (a move in between).
--
-- KEYS[1]        appointment hash    slotd:{T}:appt:<CONF>
-- KEYS[2]        active index        slotd:{T}:active:<POST>:<CAT>:<DATE>
-- KEYS[3]        day hash            slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[4]        past days index     slotd:{T}:days-due   (day label, score = retire-at ms)
-- KEYS[5]        retention index     slotd:{T}:appt-expire (conf, score = forget-at ms)
-- KEYS[6]        events stream       slotd:{T}:events
-- KEYS[6+i]      passport record of applicant i (i = 1..n, n = seats; none when not found)
-- KEYS[6+n+i]    receipt hash of applicant i (its `backing` = <CONF> from now: spent)
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        now, RFC 3339 (stored as `retired`, event `at`)
-- ARGV[3]        confirmation number
-- ARGV[4]        day label "<POST>:<CAT>:<DATE>" (the member of KEYS[5])
-- ARGV[5]        "1" if slotd's read found the appointment, else "0"
-- ARGV[6]        slot label "<POST>/<CAT>/<DATE> <HH:MM>" as read
-- ARGV[7]        applicants JSON as read (compared verbatim)
-- ARGV[8]        slot time HHMM as read
-- ARGV[9]        retention, ms (booking.retention_days), counted from retire-at
-- ARGV[10]       backstop, ms: the record's PEXPIRE is forget-at - now + this
--
-- Returns {"RETIRED"} | {"NOT_DUE"} (the day is not due: nothing written) | {"SKIPPED"} (not
-- in this day's active index any more: moved or cancelled; nothing written) | {"STALE"} (the
-- read no longer matches: nothing written, the next run reads again) | {"STRAY"} (the active
-- entry names no BOOKED, unretired appointment of this day: only that entry is
-- dropped) | {"BAD_CALL", detail}
--
-- Invariants: only an appointment of a due day is retired, once (`retired` is checked); a
-- passport claim is freed only while it still names this appointment (compare-and-set); booked
-- never goes below 0; the work is one appointment's keys. All checks before the first write.
local now = tonumber(ARGV[1])
local now_text = ARGV[2]
local conf = ARGV[3]
local label = ARGV[4]
local retention = tonumber(ARGV[9])
local backstop = tonumber(ARGV[10])
if not now or not retention or not backstop or not conf or conf == '' or #ARGV ~= 10
    or #KEYS < 6 then
  return {'BAD_CALL', 'appt_retire arguments'}
end

-- Checks.
local due = tonumber(redis.call('ZSCORE', KEYS[4], label))
if not due or due > now then
  return {'NOT_DUE'}
end
if not redis.call('HGET', KEYS[2], conf) then
  return {'SKIPPED'}
end
local appt = redis.call('HMGET', KEYS[1], 'status', 'applicants', 'seats', 'post', 'category',
  'date', 'time', 'retired')
local stray = not appt[1] or appt[1] ~= 'BOOKED' or appt[8]
if not stray then
  local current = appt[4] .. '/' .. appt[5] .. '/' .. appt[6] .. ' ' .. appt[7]
  if ARGV[5] ~= '1' or appt[2] ~= ARGV[7] or current ~= ARGV[6] then
    return {'STALE'}
  end
  stray = (appt[4] .. ':' .. appt[5] .. ':' .. appt[6]) ~= label
end
local seats = tonumber(appt[3] or '')
if not stray and (not seats or #KEYS ~= 6 + 2 * seats) then
  return {'BAD_CALL', 'appt_retire keys'}
end

-- Writes.
redis.call('HDEL', KEYS[2], conf)
if stray then
  return {'STRAY'}
end
local hhmm = ARGV[8]
local slot = redis.call('HMGET', KEYS[3], hhmm .. ':c', hhmm .. ':b')
if slot[1] then
  local booked = (tonumber(slot[2] or '0') or 0) - seats
  if booked < 0 then
    booked = 0
  end
  redis.call('HSET', KEYS[3], hhmm .. ':b', booked)
end
-- Compare-and-set: a passport is freed only while it still names this appointment; its
-- receipt stays spent (`backing`, which the claim checks read) for good.
for i = 1, seats do
  local receipt = KEYS[6 + seats + i]
  if redis.call('GET', KEYS[6 + i]) == conf .. '|' .. receipt_no(receipt) then
    redis.call('DEL', KEYS[6 + i])
  end
  redis.call('HSET', receipt, 'backing', conf)
end
local forget_at = due + retention
if forget_at <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'retired', now_text)
  redis.call('ZADD', KEYS[5], forget_at, conf)
  redis.call('PEXPIRE', KEYS[1], forget_at - now + backstop)
end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'passed', 'confirmation', conf, 'slot', ARGV[6], 'seats', seats, 'at', now_text)
return {'RETIRED'}
