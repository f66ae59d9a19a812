-- admission_step: counts one non-booking step (hold, reschedule, cancellation, waitlist join)
-- made under one waiting-room admission, before the step runs.
--
-- KEYS[1]        admission hash      slotd:{T}:admission:<TICKET_ID>
--                fields: `booked` (the one appointment the admission made, written by book.lua
--                and confirm_hold.lua), `steps` (steps counted here)
-- ARGV[1]        limit, steps one admission may make
-- ARGV[2]        record TTL, seconds
--
-- Returns {"OK", steps counted so far} | {"ADMISSION_USED"} | {"EXHAUSTED", limit}
--       | {"BAD_CALL", detail}
--
-- Invariants: steps <= limit; an admission that booked makes no further step. Checks first,
-- one write (the count and its TTL) last.
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if not limit or not ttl then
  return {'BAD_CALL', 'admission_step arguments'}
end
local rec = redis.call('HMGET', KEYS[1], 'booked', 'steps')
if rec[1] then
  return {'ADMISSION_USED'}
end
local steps = tonumber(rec[2] or '0') or 0
if steps >= limit then
  return {'EXHAUSTED', limit}
end
steps = redis.call('HINCRBY', KEYS[1], 'steps', 1)
redis.call('EXPIRE', KEYS[1], ttl)
return {'OK', steps}
