-- hold: takes the seats of one slot for a group until an expiry, with the same checks as book
-- (a passport or receipt under a live hold counts as taken). Uses holds_lib.lua helpers.
--
-- KEYS[1]        day hash            slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[2]        holds zset          slotd:{T}:holds:<POST>:<CAT>:<DATE>
-- KEYS[3]        due zset            slotd:{T}:holds-due
-- KEYS[4]        hold record         slotd:{T}:hold:<HOLD_ID>       (the new id)
-- KEYS[5]        idempotency record  slotd:{T}:idem:hold:<REQUEST_ID>
-- KEYS[6]        events stream       slotd:{T}:events
-- KEYS[5+2i]     receipt hash of applicant i (i = 1..n)
-- KEYS[6+2i]     passport record of applicant i
-- KEYS[7+2n]     admission hash      slotd:{T}:admission:<TICKET_ID>  (only for a hold under a
--                waiting-room admission: the hold is one of its counted steps, holds_lib.lua)
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        request fingerprint (hex)
-- ARGV[3]        hold id (32 hex digits, CSPRNG)
-- ARGV[4]        slot time HHMM
-- ARGV[5]        n, seats = applicants (1..10)
-- ARGV[6]        idempotency TTL, seconds
-- ARGV[7]        now, RFC 3339 (stored as created_at, events)
-- ARGV[8..11]    post, category, date YYYY-MM-DD, time HH:MM
-- ARGV[12]       applicants JSON (stored verbatim)
-- ARGV[13]       expires, ms since the epoch
-- ARGV[14]       day label "<POST>:<CAT>:<DATE>" (due members)
-- ARGV[15]       hold record TTL, seconds (kept after expiry for late confirms and replays)
-- ARGV[15+i]     passport number of applicant i
-- ARGV[16+n]     steps one admission may make (with KEYS[7+2n] only; the count's TTL is ARGV[6])
--
-- Returns {"OK"} | {"REPLAY", hold_id} | {"REQUEST_ID_REUSED"}
--       | {"ADMISSION_USED"} | {"EXHAUSTED", limit} (the admission booked / made its steps)
--       | {"SLOT_NOT_FOUND"} | {"SLOT_CLOSED"} | {"SLOT_FULL", remaining, seats under live holds}
--       | {"RECEIPT_NOT_REGISTERED", i} | {"RECEIPT_PASSPORT_MISMATCH", i}
--       | {"RECEIPT_EXPIRED", i, expires_ms} | {"RECEIPT_IN_USE", i}
--       | {"APPLICANT_ALREADY_BOOKED", i} | {"CONFIRMATION_TAKEN"} (hold id drawn twice)
--       | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- Invariants: booked + held <= capacity, counting only live holds (expired ones of this date are
-- discounted in the checks and reclaimed in the writes); at most one live hold or active
-- appointment per passport and per receipt; an admission's steps <= its limit, and a replay
-- (nothing new held) is no step. All checks run before the first write.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local expires = tonumber(ARGV[13])
local record_ttl = tonumber(ARGV[15])
if not now or not n or not ttl or not expires or not record_ttl then
  return {'BAD_CALL', 'hold arguments'}
end
local admission, step_limit = nil, nil
if #KEYS == 7 + 2 * n and #ARGV == 16 + n then
  admission, step_limit = KEYS[7 + 2 * n], tonumber(ARGV[16 + n])
  if not step_limit then
    return {'BAD_CALL', 'hold arguments'}
  end
elseif #KEYS ~= 6 + 2 * n or #ARGV ~= 15 + n then
  return {'BAD_CALL', 'hold arguments'}
end
local hhmm = ARGV[4]
local hold_id = ARGV[3]

-- Checks.
local seen = remembered(KEYS[5], now)
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

local slot = redis.call('HMGET', KEYS[1], hhmm .. ':c', hhmm .. ':b', hhmm .. ':x', hhmm .. ':h')
if not slot[1] then
  return {'SLOT_NOT_FOUND'}
end
if slot[3] == '1' then
  return {'SLOT_CLOSED'}
end
local expired, expired_by_hhmm = expired_holds(KEYS[2], now)
if not expired then
  return {'CORRUPT', 'holds member'}
end
local capacity = tonumber(slot[1])
local booked = tonumber(slot[2] or '0')
local held = tonumber(slot[4] or '0')
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

local refused = check_applicants(n, now, 15, 5)
if refused then
  return refused
end

if redis.call('EXISTS', KEYS[4]) == 1 then
  return {'CONFIRMATION_TAKEN'}
end

-- Writes: nothing below can be refused.
reclaim_holds(expired, KEYS[1], KEYS[2], KEYS[3], KEYS[6], ARGV[14],
  ARGV[8] .. '/' .. ARGV[9] .. '/' .. ARGV[10])
redis.call('HINCRBY', KEYS[1], hhmm .. ':h', n)
local member = hhmm .. ':' .. n .. ':' .. hold_id
redis.call('ZADD', KEYS[2], expires, member)
redis.call('ZADD', KEYS[3], expires, ARGV[14] .. ':' .. member)
local claim = 'hold:' .. hold_id .. ':' .. ARGV[13]
for i = 1, n do
  redis.call('SET', KEYS[6 + 2 * i], claim .. '|' .. receipt_no(KEYS[5 + 2 * i]))
end
redis.call('HSET', KEYS[4],
  'post', ARGV[8], 'category', ARGV[9], 'date', ARGV[10], 'time', ARGV[11],
  'status', 'HELD', 'seats', n, 'created_at', ARGV[7], 'expires_ms', ARGV[13],
  'applicants', ARGV[12])
redis.call('EXPIRE', KEYS[4], record_ttl)
count_admission_step(admission, ttl)
redis.call('SET', KEYS[5],
  ARGV[2] .. '|' .. hold_id .. '|' .. string.format('%.0f', now + ttl * 1000), 'EX', ttl)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'held', 'hold_ref', hold_ref(hold_id),
  'slot', ARGV[8] .. '/' .. ARGV[9] .. '/' .. ARGV[10] .. ' ' .. ARGV[11],
  'seats', n, 'expires_ms', ARGV[13], 'at', ARGV[7])
return {'OK'}
