#!lua flags=no-writes
-- audit: one consistent snapshot of every slot of a range with the seats its active
-- appointments hold (read only).
--
-- KEYS[2d-1]  day hash of day d          slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[2d]    active index of day d      slotd:{T}:active:<POST>:<CAT>:<DATE>
-- ARGV        none
--
-- Returns a flat list of quintuples, one per slot of every day:
--   day index (0-based, in KEYS order), HHMM, capacity, booked, seats held by BOOKED appointments
-- slotd applies the rules ("remaining >= 0", "booked == seats of active appointments"), so both
-- backends word violations identically.
--
-- Invariant checked by the caller: booked <= capacity and booked == sum of active seats.
local out = {}
for d = 1, #KEYS / 2 do
  local day = redis.call('HGETALL', KEYS[2 * d - 1])
  local capacity, booked = {}, {}
  local times = {}
  for i = 1, #day, 2 do
    local hhmm, kind = string.match(day[i], '^(%d%d%d%d):(%a)$')
    if kind == 'c' then
      capacity[hhmm] = day[i + 1]
      times[#times + 1] = hhmm
    elseif kind == 'b' then
      booked[hhmm] = day[i + 1]
    end
  end
  local held = {}
  local active = redis.call('HVALS', KEYS[2 * d])
  for _, entry in ipairs(active) do
    local hhmm, seats = string.match(entry, '^(%d%d%d%d):(%d+)$')
    if hhmm then
      held[hhmm] = (held[hhmm] or 0) + tonumber(seats)
    end
  end
  for _, hhmm in ipairs(times) do
    out[#out + 1] = d - 1
    out[#out + 1] = hhmm
    out[#out + 1] = capacity[hhmm]
    out[#out + 1] = booked[hhmm] or '0'
    out[#out + 1] = held[hhmm] or 0
  end
end
return out
