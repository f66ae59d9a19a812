-- day_retire: a day that has passed everywhere and whose BOOKED appointments are all retired
-- leaves the past days index. The day hash
-- (its slots, booked 0 by then) and the cancelled index stay (the latter expires by itself).
--
-- KEYS[1]        past days index     slotd:{T}:days-due   (day label, score = retire-at ms)
-- KEYS[2]        active index        slotd:{T}:active:<POST>:<CAT>:<DATE>
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        day label "<POST>:<CAT>:<DATE>"
--
-- Returns {"OK"} | {"NOT_DUE"} | {"BUSY"} (the active index still has appointments: nothing
-- written) | {"BAD_CALL", detail}
--
-- Invariants: only a due day with an empty active index is retired. Checks first.
local now = tonumber(ARGV[1])
if not now or #KEYS ~= 2 or #ARGV ~= 2 then
  return {'BAD_CALL', 'day_retire arguments'}
end

-- Checks.
local due = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
if not due or due > now then
  return {'NOT_DUE'}
end
if redis.call('HLEN', KEYS[2]) > 0 then
  return {'BUSY'}
end

-- Writes.
redis.call('ZREM', KEYS[1], ARGV[2])
return {'OK'}
