-- open_slots: opens, or re-opens and resizes, every slot of an OpenPlan.
--
-- KEYS[1]      events stream            slotd:{T}:events
-- KEYS[2..]    day hashes, one per day of the plan, in date order
--                                       slotd:{T}:day:<POST>:<CAT>:<YYYY-MM-DD>
-- ARGV[1]      seats per slot (integer >= 1)
-- ARGV[2]      post, ARGV[3] category, ARGV[4] first date, ARGV[5] last date (event only)
-- ARGV[6..10]  offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold record
--              TTL s, nonce (hex, 128 random bits; offer hold ids derive from it)
-- ARGV[11]     now, ms since the epoch
-- ARGV[12..]   slot times of each day, HHMM ("0800"), ascending
--
-- Returns {"OK", opened, updated, kept...} where kept is a flat list of quadruples
--   day index (0-based, into KEYS[2..]), HHMM, seats booked, seats held
-- for every existing slot asked to go below booked + held: it stays at capacity == booked + held.
--
-- Invariants: capacity never drops below booked + held (held as counted, see holds_lib.lua); a
-- re-opened slot is open (x = 0). Nothing here can be refused, so there is no check phase; every write is a plain HSET. Operator events carry
-- no `at`: their time is the stream entry id.
local seats = tonumber(ARGV[1])
local now = tonumber(ARGV[11])
local o = offer_context(6, now)
if not seats or not now or not o or #KEYS < 1 then
  return {'BAD_CALL', 'open_slots arguments'}
end

local opened, updated = 0, 0
local kept = {}
-- Seats that became bookable, per slot: {date, HHMM, seats}; offered to waitlists last.
local freed = {}
for d = 2, #KEYS do
  local day = KEYS[d]
  local date = string.sub(day, -10)
  for t = 12, #ARGV do
    local hhmm = ARGV[t]
    local cap_field, booked_field, closed_field = hhmm .. ':c', hhmm .. ':b', hhmm .. ':x'
    local cur = redis.call('HMGET', day, cap_field, booked_field, hhmm .. ':h', closed_field)
    if not cur[1] then
      redis.call('HSET', day, cap_field, seats, booked_field, 0, closed_field, 0)
      opened = opened + 1
      freed[#freed + 1] = {date, hhmm, seats}
    else
      -- seats under holds count as taken, like booked ones
      local booked = tonumber(cur[2] or '0') or 0
      local held = tonumber(cur[3] or '0') or 0
      local capacity = seats
      if booked + held > capacity then
        capacity = booked + held
        kept[#kept + 1] = d - 2
        kept[#kept + 1] = hhmm
        kept[#kept + 1] = booked
        kept[#kept + 1] = held
      end
      redis.call('HSET', day, cap_field, capacity, closed_field, 0)
      updated = updated + 1
      local before = 0
      if cur[4] ~= '1' then
        before = (tonumber(cur[1]) or 0) - booked - held
      end
      if capacity - booked - held > before then
        freed[#freed + 1] = {date, hhmm, capacity - booked - held - before}
      end
    end
  end
end

redis.call('XADD', KEYS[1], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'opened', 'post', ARGV[2], 'category', ARGV[3], 'from', ARGV[4], 'to', ARGV[5],
  'seats', seats, 'opened', opened, 'updated', updated)

for _, f in ipairs(freed) do
  offer_seats(o, ARGV[2], ARGV[3], f[1], f[2], f[3], nil)
end

local reply = {'OK', opened, updated}
for i = 1, #kept do
  reply[#reply + 1] = kept[i]
end
return reply
