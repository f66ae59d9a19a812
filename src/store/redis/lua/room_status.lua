-- room_status: a ticket as its holder sees it; a waiter's call is also its heartbeat.
-- KEYS: the ten room keys (room_lib.lua).  ARGV[1] now ms; ARGV[2] ticket id
-- Returns a view (room_lib) | {'TICKET_NOT_FOUND'} | {'BAD_CALL', detail}
local now = tonumber(ARGV[1])
if not now or not ARGV[2] then
  return {'BAD_CALL', 'status arguments'}
end
local t = load(ARGV[2])
if not t then
  return {'TICKET_NOT_FOUND'}
end
if t.state == 'WAITING' then
  -- GT: a replica whose clock lags never moves a heartbeat back.
  redis.call('ZADD', K_SEEN, 'GT', now, t.id)
end
return view(t, config(), now)
