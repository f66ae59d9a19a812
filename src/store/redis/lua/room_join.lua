-- room_join: a batch of joins (one replica's concurrent Join calls), in order: each takes the
-- next place in line, or gets back the live place its client key holds (a refresh).
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; then per join j = 1..n (1 <= n <= 256): ARGV[2j] client key, ARGV[2j+1] a
-- fresh ticket id (32 hex digits, from slotd)
-- Returns {'OK', rate, log_seq, then per join, in ARGV order, seven items: code, ticket id,
--   number, state, ahead, admission_number, expires_ms}; code 'OK' (a view, room_lib, of the
--   client key's ticket) or 'TICKET_TAKEN' (the fresh id exists: that join wrote nothing, the
--   other items are 0)
--   | {'WAITING_ROOM_DISABLED'} (nothing written) | {'BAD_CALL', detail}
-- Invariants: one live ticket per client key (a key twice in one batch gets one place); numbers
-- strictly increase in ARGV order and leave no gap (a refused join takes none), so the batches
-- of every replica make one join order; all reads and checks come before the first write.
-- Work: a fixed number of calls per batch (each O(n log N)) plus one ZCOUNT per refresh.
local now = tonumber(ARGV[1])
local n = (#ARGV - 1) / 2
if not now or n < 1 or n > 256 or n ~= math.floor(n) then
  return {'BAD_CALL', 'join arguments'}
end
local c = config()
if not c.enabled then
  return {'WAITING_ROOM_DISABLED'}
end
local cks, ids = {}, {}
for j = 1, n do
  cks[j] = ARGV[2 * j]
  ids[j] = ARGV[2 * j + 1]
end
-- Reads: who holds what, whether the fresh ids are free, the line's length, the view's numbers.
local held = redis.call('HMGET', K_CLIENTS, unpack(cks))
local lookup = {}
for j = 1, n do
  lookup[j] = ids[j]
  lookup[n + j] = held[j] or ids[j]
end
local packed = redis.call('HMGET', K_TICKETS, unpack(lookup))
local waiting = redis.call('ZCARD', K_WAITING)
local last = tonumber(redis.call('HGET', K_STATE, 'last_number')) or 0
local s = redis.call('HMGET', K_STATE, 'enabled_since_ms', 'log_seq')
-- Decisions, in ARGV order.
local results, fresh_of, used = {}, {}, {}
local new, beats = {}, {}
for j = 1, n do
  local ck, id = cks[j], ids[j]
  local t = nil
  if held[j] then
    t = parse_ticket(held[j], packed[n + j])
    if t and not live(t) then
      t = nil
    end
  end
  if fresh_of[ck] then
    results[j] = fresh_of[ck]
  elseif t then
    local ahead = 0
    if t.state == 'WAITING' then
      ahead = redis.call('ZCOUNT', K_WAITING, '-inf', '(' .. t.number)
      beats[#beats + 1] = now
      beats[#beats + 1] = t.id
    end
    results[j] = {'OK', t.id, t.number, t.state, ahead, t.adm, t.exp}
  elseif packed[j] or used[id] then
    results[j] = {'TICKET_TAKEN', '', 0, '', 0, 0, 0}
  else
    used[id] = true
    local number = last + #new + 1
    local r = {'OK', id, number, 'WAITING', waiting + #new, 0, 0}
    new[#new + 1] = {id = id, number = number, ck = ck}
    fresh_of[ck] = r
    results[j] = r
  end
end
-- Writes.
if #new > 0 then
  redis.call('HINCRBY', K_STATE, 'last_number', #new)
  local tickets, places, seen, clients = {}, {}, {}, {}
  for _, t in ipairs(new) do
    tickets[#tickets + 1] = t.id
    tickets[#tickets + 1] = string.format('%d|WAITING|0|0|%s', t.number, t.ck)
    places[#places + 1] = t.number
    places[#places + 1] = t.id
    seen[#seen + 1] = now
    seen[#seen + 1] = t.id
    clients[#clients + 1] = t.ck
    clients[#clients + 1] = t.id
  end
  redis.call('HSET', K_TICKETS, unpack(tickets))
  redis.call('ZADD', K_WAITING, unpack(places))
  redis.call('ZADD', K_SEEN, unpack(seen))
  redis.call('HSET', K_CLIENTS, unpack(clients))
end
if #beats > 0 then
  -- GT: a replica whose clock lags never moves a heartbeat back.
  redis.call('ZADD', K_SEEN, 'GT', unpack(beats))
end
local reply = {'OK', tostring(rate(c, now, s[1])), tonumber(s[2]) or 0}
for j = 1, n do
  for _, v in ipairs(results[j]) do
    reply[#reply + 1] = v
  end
end
return reply
