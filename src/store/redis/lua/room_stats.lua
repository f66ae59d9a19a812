-- room_stats: counts for operators (read only; silent waiters leave at the next step).
-- KEYS: the ten room keys (room_lib.lua).  ARGV[1] now ms
-- Returns {'OK', waiting, active, admitted_total, expired_total, last_number, rate}
local now = tonumber(ARGV[1])
if not now then
  return {'BAD_CALL', 'stats arguments'}
end
local s = redis.call('HMGET', K_STATE, 'admitted_total', 'expired_total', 'last_number', 'enabled_since_ms')
return {'OK', redis.call('ZCARD', K_WAITING), redis.call('ZCARD', K_ACTIVE), tonumber(s[1]) or 0,
  tonumber(s[2]) or 0, tonumber(s[3]) or 0, tostring(rate(config(), now, s[4]))}
