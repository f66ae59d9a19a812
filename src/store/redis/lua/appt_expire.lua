-- appt_expire: forgets retired appointments whose retention has passed (the sweeper, one
-- bounded batch per call; see appt_retire.lua): from then GetAppointment answers NOT_FOUND.
--
-- KEYS[1]        retention index     slotd:{T}:appt-expire (conf, score = forget-at ms)
-- KEYS[1+i]      appointment hash    slotd:{T}:appt:<CONF_i>   (i = 1..k, k <= 64)
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[1+i]      CONF_i
--
-- Returns {"OK", forgotten} | {"BAD_CALL", detail}
--
-- Invariants: a record is deleted only when its index score is <= now and it is retired (field
-- `retired`: a record that is not, e.g. a new appointment that drew a freed number, is never
-- touched); a due member leaves the index either way. All reads before the first write.
local now = tonumber(ARGV[1])
if not now or #KEYS ~= #ARGV or #KEYS < 1 then
  return {'BAD_CALL', 'appt_expire arguments'}
end

-- Checks.
local due, retired = {}, {}
for i = 2, #KEYS do
  local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]))
  due[i] = score ~= nil and score <= now
  retired[i] = redis.call('HEXISTS', KEYS[i], 'retired') == 1
end

-- Writes.
local forgotten = 0
for i = 2, #KEYS do
  if due[i] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    if retired[i] then
      redis.call('DEL', KEYS[i])
      forgotten = forgotten + 1
    end
  end
end
return {'OK', forgotten}
