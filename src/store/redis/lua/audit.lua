#!lua flags=no-writes
-- audit: one consistent snapshot of every slot of a range with the seats its active
-- appointments and its holds take (read only).
--
-- KEYS[3d-2]  day hash of day d          slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[3d-1]  active index of day d      slotd:{T}:active:<POST>:<CAT>:<DATE>
-- KEYS[3d]    holds zset of day d        slotd:{T}:holds:<POST>:<CAT>:<DATE>
-- ARGV        none
--
-- Returns a flat list of septuples, one per slot of every day:
--   day index (0-based), HHMM, capacity, booked, seats of BOOKED appointments, held counter,
--   seats of the holds in the holds set (live or expired but not yet reclaimed)
-- slotd applies the rules (`domain::rules::audit_slot`), so both backends word violations
-- identically.
--
-- Invariant checked by the caller: booked + held <= capacity, booked == sum of active seats,
-- held == sum of hold seats.
local out = {}
for d = 1, #KEYS / 3 do
  local day = redis.call('HGETALL', KEYS[3 * d - 2])
  local capacity, booked, held = {}, {}, {}
  local times = {}
  for i = 1, #day, 2 do
    local hhmm, kind = string.match(day[i], '^(%d%d%d%d):(%a)$')
    if kind == 'c' then
      capacity[hhmm] = day[i + 1]
      times[#times + 1] = hhmm
    elseif kind == 'b' then
      booked[hhmm] = day[i + 1]
    elseif kind == 'h' then
      held[hhmm] = day[i + 1]
    end
  end
  local active_seats = {}
  for _, entry in ipairs(redis.call('HVALS', KEYS[3 * d - 1])) do
    local hhmm, seats = string.match(entry, '^(%d%d%d%d):(%d+)$')
    if hhmm then
      active_seats[hhmm] = (active_seats[hhmm] or 0) + tonumber(seats)
    end
  end
  local hold_seats = {}
  for _, member in ipairs(redis.call('ZRANGE', KEYS[3 * d], 0, -1)) do
    local hhmm, seats = string.match(member, '^(%d%d%d%d):(%d+):')
    if hhmm then
      hold_seats[hhmm] = (hold_seats[hhmm] or 0) + tonumber(seats)
    end
  end
  for _, hhmm in ipairs(times) do
    out[#out + 1] = d - 1
    out[#out + 1] = hhmm
    out[#out + 1] = capacity[hhmm]
    out[#out + 1] = booked[hhmm] or '0'
    out[#out + 1] = active_seats[hhmm] or 0
    out[#out + 1] = held[hhmm] or '0'
    out[#out + 1] = hold_seats[hhmm] or 0
  end
end
return out
