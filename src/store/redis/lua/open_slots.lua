-- open_slots: opens, or re-opens and resizes, every slot of an OpenPlan.
--
-- KEYS[1]      events stream            slotd:{T}:events
-- KEYS[2..]    day hashes, one per day of the plan, in date order
--                                       slotd:{T}:day:<POST>:<CAT>:<YYYY-MM-DD>
-- ARGV[1]      seats per slot (integer >= 1)
-- ARGV[2]      post, ARGV[3] category, ARGV[4] first date, ARGV[5] last date (event only)
-- ARGV[6..]    slot times of each day, HHMM ("0800"), ascending
--
-- Returns {"OK", opened, updated, kept...} where kept is a flat list of quadruples
--   day index (0-based, into KEYS[2..]), HHMM, seats booked, seats held
-- for every existing slot asked to go below booked + held: it stays at capacity == booked + held.
--
-- Invariants: capacity never drops below booked + held (held as counted, see holds_lib.lua); a
-- re-opened slot is open (x = 0). Nothing here can be refused, so there is no check phase; every write is a plain HSET. Operator events carry
-- no `at`: their time is the stream entry id.
local seats = tonumber(ARGV[1])
if not seats or #KEYS < 1 then
  return {'BAD_CALL', 'open_slots arguments'}
end

local opened, updated = 0, 0
local kept = {}
for d = 2, #KEYS do
  local day = KEYS[d]
  for t = 6, #ARGV do
    local hhmm = ARGV[t]
    local cap_field, booked_field, closed_field = hhmm .. ':c', hhmm .. ':b', hhmm .. ':x'
    local cur = redis.call('HMGET', day, cap_field, booked_field, hhmm .. ':h')
    if not cur[1] then
      redis.call('HSET', day, cap_field, seats, booked_field, 0, closed_field, 0)
      opened = opened + 1
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
    end
  end
end

redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000000, '*',
  'type', 'opened', 'post', ARGV[2], 'category', ARGV[3], 'from', ARGV[4], 'to', ARGV[5],
  'seats', seats, 'opened', opened, 'updated', updated)

local reply = {'OK', opened, updated}
for i = 1, #kept do
  reply[#reply + 1] = kept[i]
end
return reply
