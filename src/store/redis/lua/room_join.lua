-- room_join: a batch of joins (one replica's concurrent Join calls), in order: each takes the
-- next place in line, or gets back the live place its client key holds (a refresh).
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; then per join j = 1..n (1 <= n <= BATCH_MAX): ARGV[2j] client key, ARGV[2j+1] a
-- fresh ticket id (32 hex digits, from slotd)
-- Returns {'OK', rate, log_seq, first, ahead, record_1, ..., record_n}, one record per join in
-- ARGV order:
--   'N'                         a new place for the join's fresh id, WAITING: the i-th 'N' of
--                               the reply has number first + i - 1 and ahead + i - 1 ahead
--   'H|<number>|<state>|<ahead>|<admission_number>|<expires_ms>|<id>'  the live ticket the
--                               client key holds (a refresh; WAITING or ADMITTED), also when
--                               an earlier join of this batch gave it
--   'T'                         refused: the fresh id exists (nothing written for that join)
--   | {'WAITING_ROOM_DISABLED'} (nothing written) | {'BAD_CALL', detail}
-- Invariants: one live ticket per client key (a key twice in one batch gets one place); numbers
-- strictly increase in ARGV order and leave no gap (a refused join takes none), so the batches
-- of every replica make one join order; all reads and checks come before the first write.
-- Work: a fixed number of calls per batch (each O(n log N)), plus one ZCOUNT per refresh.
local now = tonumber(ARGV[1])
local n = (#ARGV - 1) / 2
if not now or n < 1 or n > BATCH_MAX or n ~= math.floor(n) then
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
local taken = redis.call('HMGET', K_TICKETS, unpack(ids))
local held_ids = {}
for j = 1, n do
  if held[j] then
    held_ids[#held_ids + 1] = held[j]
  end
end
local held_packed = {}
if #held_ids > 0 then
  local packed = redis.call('HMGET', K_TICKETS, unpack(held_ids))
  for i, id in ipairs(held_ids) do
    held_packed[id] = packed[i]
  end
end
local waiting = redis.call('ZCARD', K_WAITING)
local last = tonumber(redis.call('HGET', K_STATE, 'last_number')) or 0
local s = redis.call('HMGET', K_STATE, 'enabled_since_ms', 'log_seq')
-- Decisions, in ARGV order, straight into the reply. New places are numbered last + 1, + 2, ...
-- in order and have waiting, waiting + 1, ... ahead: the reply gives both once, the records only
-- say 'N'. Numbers are converted to strings once (ARGV[1] is `now` already as a string).
local reply = {'OK', tostring(rate(c, now, s[1])), tonumber(s[2]) or 0, last + 1, waiting}
local first_of, used = {}, {}
local tickets, places, seen, clients, beats = {}, {}, {}, {}, {}
local k = 0
for j = 1, n do
  local ck, id = cks[j], ids[j]
  local t = nil
  if held[j] then
    t = parse_ticket(held[j], held_packed[held[j]])
    if t and not live(t) then
      t = nil
    end
  end
  local again = first_of[ck]
  if again then
    -- The key again later in this batch: the same place, named (its own fresh id is unused).
    reply[#reply + 1] = 'H|' .. (last + again) .. '|WAITING|' .. (waiting + again - 1) .. '|0|0|' .. places[2 * again]
  elseif t then
    local ahead = 0
    if t.state == 'WAITING' then
      ahead = redis.call('ZCOUNT', K_WAITING, '-inf', '(' .. t.number)
      beats[#beats + 1] = ARGV[1]
      beats[#beats + 1] = t.id
    end
    reply[#reply + 1] = 'H|' .. t.number .. '|' .. t.state .. '|' .. ahead .. '|' .. t.adm .. '|' .. t.exp .. '|' .. t.id
  elseif taken[j] or used[id] then
    reply[#reply + 1] = 'T'
  else
    used[id] = true
    k = k + 1
    first_of[ck] = k
    reply[#reply + 1] = 'N'
    local number = tostring(last + k)
    tickets[2 * k - 1], tickets[2 * k] = id, number .. '|WAITING|0|0|' .. ck
    places[2 * k - 1], places[2 * k] = number, id
    seen[2 * k - 1], seen[2 * k] = ARGV[1], id
    clients[2 * k - 1], clients[2 * k] = ck, id
  end
end
-- Writes.
if k > 0 then
  redis.call('HINCRBY', K_STATE, 'last_number', k)
  redis.call('HSET', K_TICKETS, unpack(tickets))
  redis.call('ZADD', K_WAITING, unpack(places))
  redis.call('ZADD', K_SEEN, unpack(seen))
  redis.call('HSET', K_CLIENTS, unpack(clients))
end
if #beats > 0 then
  -- GT: a replica whose clock lags never moves a heartbeat back.
  redis.call('ZADD', K_SEEN, 'GT', unpack(beats))
end
return reply
