-- room_status: a batch of tickets as their holders see them (one replica's concurrent status
-- reads: GetStatus calls and the first read of each new Watch stream); a waiter's read is also
-- its heartbeat.
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2..n+1] ticket ids (1 <= n <= BATCH_MAX)
-- Returns {'OK', rate, log_seq, record_1, ..., record_n}, one record per id in ARGV order:
--   'S|<number>|<state>|<ahead>|<admission_number>|<expires_ms>|<client_key>'  (a view, room_lib)
--   'X'   no such ticket
--   | {'BAD_CALL', detail}
-- Invariant: writes only heartbeats of tickets still waiting (ZADD GT: a lagging clock never
-- moves a heartbeat back), after every read. Work: O(log N) per id.
local now = tonumber(ARGV[1])
local n = #ARGV - 1
if not now or n < 1 or n > BATCH_MAX then
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
    reply[#reply + 1] = 'X'
  else
    local ahead = 0
    if t.state == 'WAITING' then
      ahead = redis.call('ZCOUNT', K_WAITING, '-inf', '(' .. t.number)
      beats[#beats + 1] = now
      beats[#beats + 1] = t.id
    end
    reply[#reply + 1] = 'S|' .. t.number .. '|' .. t.state .. '|' .. ahead .. '|' .. t.adm .. '|' .. t.exp .. '|' .. t.ck
  end
end
if #beats > 0 then
  redis.call('ZADD', K_SEEN, 'GT', unpack(beats))
end
return reply
