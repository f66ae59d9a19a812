-- book: books a group on one slot, all or nothing. Uses holds_lib.lua helpers.
--
-- KEYS[1]        day hash            slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[2]        active index        slotd:{T}:active:<POST>:<CAT>:<DATE>
-- KEYS[3]        appointment hash    slotd:{T}:appt:<CONF>            (the new number)
-- KEYS[4]        idempotency record  slotd:{T}:idem:book:<REQUEST_ID>
-- KEYS[5]        events stream       slotd:{T}:events
-- KEYS[4+2i]     receipt hash of applicant i (i = 1..n)    slotd:{T}:receipt:<NO>
-- KEYS[5+2i]     passport record of applicant i            slotd:{T}:passport:<NO>
-- KEYS[6+2n]     holds zset          slotd:{T}:holds:<POST>:<CAT>:<DATE>
-- KEYS[7+2n]     due zset            slotd:{T}:holds-due
-- KEYS[8+2n]     admission hash      slotd:{T}:admission:<TICKET_ID>  (only for a call under a
--                waiting-room admission: field `booked` = the one appointment it made, `steps`)
-- ARGV[1]        now, ms since the epoch (slotd's clock; Redis TIME is never read)
-- ARGV[2]        request fingerprint (hex)
-- ARGV[3]        confirmation number of the new appointment
-- ARGV[4]        slot time HHMM
-- ARGV[5]        n, seats = applicants (1..10)
-- ARGV[6]        idempotency TTL, seconds
-- ARGV[7]        the idempotency record "<fingerprint>|<CONF>|<expiry ms>" (built by slotd)
-- ARGV[8]        now, RFC 3339 (stored as created_at / updated_at)
-- ARGV[9..12]    post, category, date YYYY-MM-DD, time HH:MM (stored in the appointment)
-- ARGV[13]       applicants JSON (stored verbatim, parsed only by slotd)
-- ARGV[13+i]     passport number of applicant i
-- ARGV[14+n]     day label "<POST>:<CAT>:<DATE>" (due members)
-- ARGV[15+n]     slot label "<POST>/<CAT>/<DATE> <HH:MM>" (the event's `slot`)
-- ARGV[16+n]     admission record TTL, seconds (with KEYS[8+2n] only)
--
-- Layout 2 (docs/redis-keys.md): a booking writes no manifest member (the manifest is the
-- active index, sorted when read), one passport record "<CONF>|<RECEIPT>" per applicant guards
-- passport and receipt (no receipt write), and slotd builds the idempotency record and the
-- event's slot label, so the script only checks and writes.
--
-- Returns {"OK"}                                 booked
--       | {"REPLAY", conf}                       request_id seen with the same content
--       | {"REQUEST_ID_REUSED"}
--       | {"SLOT_NOT_FOUND"} | {"SLOT_CLOSED"} | {"SLOT_FULL", remaining, seats under live holds}
--       | {"RECEIPT_NOT_REGISTERED", i} | {"RECEIPT_PASSPORT_MISMATCH", i}
--       | {"RECEIPT_EXPIRED", i, expires_ms} | {"RECEIPT_IN_USE", i}
--       | {"APPLICANT_ALREADY_BOOKED", i}
--       | {"CONFIRMATION_TAKEN"}
--       | {"ADMISSION_USED"}                     the admission booked before (one admission books once)
--       | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- Invariants: booked + held <= capacity counting only live holds (expired holds of the date are
-- discounted in the checks and reclaimed in the writes, when the slot holds any seats); one active appointment or live hold per
-- passport and per receipt; booked == seats of the day's active index entries for the slot. Every check runs
-- before the first write (Redis does not roll a script back), in the same order as the memory
-- store, so both backends refuse the same request with the same error.
local now = tonumber(ARGV[1])
local fingerprint = ARGV[2]
local conf = ARGV[3]
local hhmm = ARGV[4]
local n = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local now_text = ARGV[8]
if not now or not n or not ttl then
  return {'BAD_CALL', 'book arguments'}
end
local admission = nil
if #KEYS == 8 + 2 * n and #ARGV == 16 + n then
  admission = KEYS[8 + 2 * n]
elseif #KEYS ~= 7 + 2 * n or #ARGV ~= 15 + n then
  return {'BAD_CALL', 'book arguments'}
end

-- Checks.
local seen = remembered(KEYS[4], now)
if seen == false then
  return {'CORRUPT', 'idempotency record'}
end
if seen then
  if seen[1] ~= fingerprint then
    return {'REQUEST_ID_REUSED'}
  end
  return {'REPLAY', seen[2]}
end
if admission and redis.call('HEXISTS', admission, 'booked') == 1 then
  return {'ADMISSION_USED'}
end

local slot = redis.call('HMGET', KEYS[1], hhmm .. ':c', hhmm .. ':b', hhmm .. ':x', hhmm .. ':h')
if not slot[1] then
  return {'SLOT_NOT_FOUND'}
end
if slot[3] == '1' then
  return {'SLOT_CLOSED'}
end
local holds_key, due_key = KEYS[6 + 2 * n], KEYS[7 + 2 * n]
local capacity = tonumber(slot[1])
local booked = tonumber(slot[2] or '0')
local held = tonumber(slot[4] or '0')
-- The slot's held counter counts the seats of its members in the holds set, so with none held
-- no hold of this slot can have expired: the check needs no scan, and the date's other expired
-- holds are the sweeper's (and their own slot's next booking or hold), as on a date with a
-- waitlist. Saves an EXISTS and a ZRANGEBYSCORE on most bookings (benches/README.md §16).
local expired, expired_by_hhmm = {}, {}
if held ~= 0 then
  expired, expired_by_hhmm = expired_holds(holds_key, now)
  if not expired then
    return {'CORRUPT', 'holds member'}
  end
end
if not capacity or not booked or not held then
  return {'CORRUPT', 'slot counters'}
end
local remaining = capacity - booked - (held - (expired_by_hhmm[hhmm] or 0))
if remaining < 0 then
  remaining = 0
end
if remaining < n then
  return {'SLOT_FULL', remaining, held - (expired_by_hhmm[hhmm] or 0)}
end

local refused = check_applicants(n, now, 13, 4)
if refused then
  return refused
end

if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'CONFIRMATION_TAKEN'}
end

-- Writes: nothing below can be refused.
if #expired > 0 then
  -- The event slot prefix "<POST>/<CAT>/<DATE>": the slot label less " HH:MM".
  reclaim_holds(expired, KEYS[1], holds_key, due_key, KEYS[5], ARGV[14 + n],
    string.sub(ARGV[15 + n], 1, -7))
end
redis.call('HINCRBY', KEYS[1], hhmm .. ':b', n)
for i = 1, n do
  redis.call('SET', KEYS[5 + 2 * i], conf .. '|' .. receipt_no(KEYS[4 + 2 * i]))
end
redis.call('HSET', KEYS[3],
  'post', ARGV[9], 'category', ARGV[10], 'date', ARGV[11], 'time', ARGV[12],
  'status', 'BOOKED', 'seats', n, 'created_at', now_text, 'updated_at', now_text,
  'applicants', ARGV[13])
redis.call('HSET', KEYS[2], conf, hhmm .. ':' .. n)
redis.call('SET', KEYS[4], ARGV[7], 'EX', ttl)
if admission then
  redis.call('HSET', admission, 'booked', conf)
  redis.call('EXPIRE', admission, tonumber(ARGV[16 + n]))
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'booked', 'confirmation', conf, 'slot', ARGV[15 + n], 'seats', n, 'at', now_text)
return {'OK'}
