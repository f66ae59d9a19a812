-- set_capacity: sets one existing slot's capacity, never below the seats booked.
--
-- KEYS[1]  day hash       slotd:{T}:day:<POST>:<CAT>:<YYYY-MM-DD>
-- KEYS[2]  events stream  slotd:{T}:events
-- ARGV[1]  slot time HHMM
-- ARGV[2]  new capacity (integer >= 0)
-- ARGV[3]  slot label "POST/CAT/DATE HH:MM" (event only)
-- ARGV[4..6]  post, category, date
-- ARGV[7..11] offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold record
--             TTL s, nonce (hex, 128 random bits; offer hold ids derive from it)
-- ARGV[12] now, ms since the epoch
--
-- Returns {"OK", capacity, booked, closed(0|1), held}
--      or {"SLOT_NOT_FOUND"} | {"CAPACITY_BELOW_BOOKED", booked + held}; a refusal writes nothing.
--
-- Invariant: booked + held <= capacity after the call (held as counted: a hold that expired but
-- is not yet reclaimed still counts, which errs on the safe side). Seats added go to the date's
-- waitlist first (the reply's held counts those offers). Checks first, writes last. Uses the
-- library's holds_lib.lua and waitlist_lib.lua helpers.
local hhmm = ARGV[1]
local capacity = tonumber(ARGV[2])
local now = tonumber(ARGV[12])
local o = offer_context(7, now)
if not capacity or not now or not o then
  return {'BAD_CALL', 'set_capacity arguments'}
end
local cur = redis.call('HMGET', KEYS[1], hhmm .. ':c', hhmm .. ':b', hhmm .. ':x', hhmm .. ':h')
if not cur[1] then
  return {'SLOT_NOT_FOUND'}
end
local booked = tonumber(cur[2] or '0') or 0
local held = tonumber(cur[4] or '0') or 0
if capacity < booked + held then
  return {'CAPACITY_BELOW_BOOKED', booked + held}
end

redis.call('HSET', KEYS[1], hhmm .. ':c', capacity)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'capacity_set', 'slot', ARGV[3], 'capacity', capacity)
local raised = capacity - (tonumber(cur[1]) or 0)
if raised > 0 then
  held = held + offer_seats(o, ARGV[4], ARGV[5], ARGV[6], hhmm, raised, nil)
end
local closed = 0
if cur[3] == '1' then
  closed = 1
end
return {'OK', capacity, booked, closed, held}
