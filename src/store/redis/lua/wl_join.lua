-- wl_join: puts a group in a post and category's waitlist for a date range (and optionally
-- some times), after checking its receipts and passports like a booking would. Uses the
-- library's holds_lib.lua and waitlist_lib.lua helpers (waitlist key layout there and in
-- docs/redis-keys.md).
--
-- KEYS[1]        idempotency record  slotd:{T}:idem:wl:<REQUEST_ID>
-- KEYS[2]        entry hash          slotd:{T}:wle:<ENTRY_ID>          (the new id)
-- KEYS[3]        line zset           slotd:{T}:wlq:<POST>:<CAT>
-- KEYS[4]        join sequence       slotd:{T}:wlseq
-- KEYS[5]        events stream       slotd:{T}:events
-- KEYS[3+3i]     receipt hash of applicant i (i = 1..n)
-- KEYS[4+3i]     passport record of applicant i
-- KEYS[5+3i]     waitlist passport   slotd:{T}:wlp:<PASSPORT>
-- KEYS[6+3n]     retirement index    slotd:{T}:wl-due   (entry id, score = ARGV[17])
-- KEYS[7+3n..]   date lines          slotd:{T}:wl:<POST>:<CAT>:<DATE>, one per date in range
-- KEYS[#KEYS]    admission hash      slotd:{T}:admission:<TICKET_ID>  (only for a join under a
--                waiting-room admission, after the date lines: the join is one of its counted
--                steps, holds_lib.lua)
-- ARGV[1]        now, ms since the epoch
-- ARGV[2]        request fingerprint (hex)
-- ARGV[3]        entry id (32 hex digits, CSPRNG)
-- ARGV[4..7]     post, category, first date, last date
-- ARGV[8]        acceptable times "HHMM HHMM ..." ("" = any)
-- ARGV[9]        applicants JSON (stored verbatim)
-- ARGV[10]       n, seats = applicants (1..10)
-- ARGV[11]       idempotency TTL, seconds
-- ARGV[12]       dates "YYYY-MM-DD ..." (as many as date line keys)
-- ARGV[13]       passports "P1 P2 ..." (applicant order), ARGV[14] receipts likewise
-- ARGV[15]       the appointment a moving entry moves earlier, or "" (a new booking)
-- ARGV[16]       reschedule limit per receipt (moving entries)
-- ARGV[17]       retire at, ms: when the range has passed in every time zone (the sweeper
--                then retires the entry if it still waits, freeing its passports)
-- ARGV[18]       steps one admission may make (with the admission key only; the count's TTL is
--                ARGV[11])
--
-- A moving entry's group holds an appointment already (its claims): instead of the booking
-- checks, the appointment must be BOOKED, with exactly these applicants (JSON verbatim), on a
-- date after the range, and every receipt must have a reschedule left.
-- Returns {"OK"} | {"REPLAY", entry_id} | {"REQUEST_ID_REUSED"} | {"ALREADY_WAITING", i}
--       | {"ADMISSION_USED"} | {"EXHAUSTED", limit} (the admission booked / made its steps)
--       | {"RECEIPT_NOT_REGISTERED", i} | {"RECEIPT_PASSPORT_MISMATCH", i}
--       | {"RECEIPT_EXPIRED", i, expires_ms} | {"RECEIPT_IN_USE", i}
--       | {"APPLICANT_ALREADY_BOOKED", i} | {"CONFIRMATION_TAKEN"} (entry id drawn twice)
--       | {"APPOINTMENT_NOT_FOUND"} | {"APPOINTMENT_CANCELLED"} | {"MOVING_RANGE", date}
--       | {"RESCHEDULE_LIMIT", i}                   (moving entries)
--       | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- No oracle: ALREADY_WAITING is checked only after the receipt checks (or the moving
-- entry's appointment checks), so a caller who knows a passport but not its receipt learns
-- nothing about whether it waits.
-- Invariants: at most one entry in line per passport; join sequence numbers only grow, so the
-- score order of every line is join order. All checks run before the first write.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[10])
local ttl = tonumber(ARGV[11])
local limit = tonumber(ARGV[16])
local retire_at = tonumber(ARGV[17])
if not now or not n or not ttl or not limit or not retire_at
  or (#ARGV ~= 17 and #ARGV ~= 18) then
  return {'BAD_CALL', 'wl_join arguments'}
end
-- Under an admission: its limit, and its key after the date lines.
local admission, step_limit, last_line = nil, nil, #KEYS
if #ARGV == 18 then
  step_limit = tonumber(ARGV[18])
  admission, last_line = KEYS[#KEYS], #KEYS - 1
  if not step_limit then
    return {'BAD_CALL', 'wl_join arguments'}
  end
end
if last_line < 7 + 3 * n then
  return {'BAD_CALL', 'wl_join arguments'}
end
local id = ARGV[3]
local prefix = prefix_of(KEYS[2], 'wle:' .. id)

-- Checks.
local seen = remembered(KEYS[1], now)
if seen == false then
  return {'CORRUPT', 'idempotency record'}
end
if seen then
  if seen[1] ~= ARGV[2] then
    return {'REQUEST_ID_REUSED'}
  end
  return {'REPLAY', seen[2]}
end
local step_refused = admission_step_refusal(admission, step_limit)
if step_refused then
  return step_refused
end
local passports = split_words(ARGV[13])
local moves = ARGV[15]
if moves ~= '' then
  local a = redis.call('HMGET', prefix .. 'appt:' .. moves, 'status', 'applicants', 'date')
  if not a[1] or a[2] ~= ARGV[9] then
    return {'APPOINTMENT_NOT_FOUND'}
  end
  if a[1] ~= 'BOOKED' then
    return {'APPOINTMENT_CANCELLED'}
  end
  if a[3] <= ARGV[7] then
    return {'MOVING_RANGE', a[3]}
  end
  for i = 1, n do
    local used = tonumber(redis.call('HGET', KEYS[3 + 3 * i], 'reschedules') or '0') or 0
    if used >= limit then
      return {'RESCHEDULE_LIMIT', i}
    end
  end
end
for i = 1, n do
  if moves ~= '' then
    break
  end
  local receipt = redis.call('HMGET', KEYS[3 + 3 * i], 'passport', 'expires_ms', 'backing')
  if not receipt[1] then
    return {'RECEIPT_NOT_REGISTERED', i}
  end
  if receipt[1] ~= passports[i] then
    return {'RECEIPT_PASSPORT_MISMATCH', i}
  end
  local expires = tonumber(receipt[2])
  if not expires then
    return {'CORRUPT', 'receipt expiry'}
  end
  if expires <= now then
    return {'RECEIPT_EXPIRED', i, receipt[2]}
  end
  local refused = claim_refusal(KEYS[3 + 3 * i], receipt[3],
    redis.call('GET', KEYS[4 + 3 * i]), now)
  if refused then
    return {refused, i}
  end
end
-- Only now, once the caller proved each passport (its receipt, or the appointment's number):
-- whether a passport waits already is no answer for someone who knows the passport alone.
for i = 1, n do
  local waiting = redis.call('GET', KEYS[5 + 3 * i])
  if waiting then
    local status = redis.call('HGET', prefix .. 'wle:' .. waiting, 'status')
    if status == 'WAITING' or status == 'OFFERED' then
      return {'ALREADY_WAITING', i}
    end
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'CONFIRMATION_TAKEN'}
end

-- Writes.
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2],
  'post', ARGV[4], 'category', ARGV[5], 'from', ARGV[6], 'to', ARGV[7], 'times', ARGV[8],
  'applicants', ARGV[9], 'seats', n, 'dates', ARGV[12], 'passports', ARGV[13],
  'receipts', ARGV[14], 'status', 'WAITING', 'seq', seq, 'created_ms', ARGV[1],
  'updated_ms', ARGV[1], 'limit', limit)
if moves ~= '' then
  redis.call('HSET', KEYS[2], 'moves', moves)
end
redis.call('ZADD', KEYS[3], seq, id)
for k = 7 + 3 * n, last_line do
  redis.call('ZADD', KEYS[k], seq, id)
end
count_admission_step(admission, ttl)
redis.call('ZADD', KEYS[6 + 3 * n], retire_at, id)
for i = 1, n do
  redis.call('SET', KEYS[5 + 3 * i], id)
end
redis.call('SET', KEYS[1],
  ARGV[2] .. '|' .. id .. '|' .. string.format('%.0f', now + ttl * 1000), 'EX', ttl)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'waitlist_joined', 'entry', id, 'post', ARGV[4], 'category', ARGV[5],
  'from', ARGV[6], 'to', ARGV[7], 'seats', n)
return {'OK'}
