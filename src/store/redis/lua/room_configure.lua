-- room_configure: replaces the settings; turning the room on fills the token bucket. Turning it
-- on or unpausing it starts the observed rate's window afresh (enabled_since_ms: room_lib
-- `rate`): a pause admits nobody, and counting it as a time of no admissions would show every
-- waiter a too-long estimate, and a new one at every step of the rate, for a minute after.
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2..8] enabled (0/1), rate per minute, cap, session s, timeout s,
-- paused (0/1), gate calendar (0/1) — validated by slotd before the call.
-- Returns {'OK'} | {'BAD_CALL', detail}
local now = tonumber(ARGV[1])
if not now or #ARGV ~= 8 then
  return {'BAD_CALL', 'configure arguments'}
end
local was = config()
redis.call('HSET', K_CONFIG, 'enabled', ARGV[2], 'rate', ARGV[3], 'cap', ARGV[4], 'session', ARGV[5],
  'timeout', ARGV[6], 'paused', ARGV[7], 'gate', ARGV[8])
local c = config()
if c.enabled and not was.enabled then
  redis.call('HSET', K_STATE, 'tokens', tostring(burst(c)), 'refilled_ms', now, 'enabled_since_ms', now)
elseif c.enabled and was.paused and not c.paused then
  redis.call('HSET', K_STATE, 'enabled_since_ms', now)
end
return {'OK'}
