-- room_status: a batch of tickets as their holders see them (one replica's concurrent status
-- reads: GetStatus calls and the first read of each new Watch stream); a waiter's read is also
-- its heartbeat.
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2..n+1] ticket ids (1 <= n <= 256)
-- Returns {'OK', rate, log_seq, then per id, in ARGV order, seven items: code, client key,
--   number, state, ahead, admission_number, expires_ms}; code 'OK' (a view, room_lib) or
--   'TICKET_NOT_FOUND' (the other items are 0) | {'BAD_CALL', detail}
-- Invariant: writes only heartbeats of tickets still waiting (ZADD GT: a lagging clock never
-- moves a heartbeat back), after every read. Work: O(log N) per id.
local now = tonumber(ARGV[1])
local n = #ARGV - 1
if not now or n < 1 or n > 256 then
  return {'BAD_CALL', 'status arguments'}
end
local ids = {}
for j = 1, n do
  ids[j] = ARGV[j + 1]
end
local packed = redis.call('HMGET', K_TICKETS, unpack(ids))
local s = redis.call('HMGET', K_STATE, 'enabled_since_ms', 'log_seq')
local reply = {'OK', tostring(rate(config(), now, s[1])), tonumber(s[2]) or 0}
local beats = {}
for j = 1, n do
  local t = parse_ticket(ids[j], packed[j])
  if not t then
    for _, v in ipairs({'TICKET_NOT_FOUND', '', 0, '', 0, 0, 0}) do
      reply[#reply + 1] = v
    end
  else
    local ahead = 0
    if t.state == 'WAITING' then
      ahead = redis.call('ZCOUNT', K_WAITING, '-inf', '(' .. t.number)
      beats[#beats + 1] = now
      beats[#beats + 1] = t.id
    end
    for _, v in ipairs({'OK', t.ck, t.number, t.state, ahead, t.adm, t.exp}) do
      reply[#reply + 1] = v
    end
  end
end
if #beats > 0 then
  redis.call('ZADD', K_SEEN, 'GT', unpack(beats))
end
return reply
