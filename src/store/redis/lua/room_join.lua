-- room_join: takes the next place in line, or returns the live place the client key holds.
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2] client key; ARGV[3] fresh ticket id (32 hex digits, from slotd)
-- Returns a view (room_lib) | {'WAITING_ROOM_DISABLED'} | {'TICKET_TAKEN'} | {'BAD_CALL', detail}
-- Invariant: one live ticket per client key; numbers strictly increase (join order).
local now = tonumber(ARGV[1])
local ck, fresh = ARGV[2], ARGV[3]
if not now or not ck or not fresh then
  return {'BAD_CALL', 'join arguments'}
end
local c = config()
if not c.enabled then
  return {'WAITING_ROOM_DISABLED'}
end
local held = redis.call('HGET', K_CLIENTS, ck)
if held then
  local t = load(held)
  if t and live(t) then
    if t.state == 'WAITING' then
      redis.call('ZADD', K_SEEN, 'GT', now, t.id)
    end
    return view(t, c, now)
  end
end
if redis.call('HEXISTS', K_TICKETS, fresh) == 1 then
  return {'TICKET_TAKEN'}
end
-- Writes. Everyone waiting is ahead of the newest number: ZCARD (O(1)) instead of ZCOUNT.
local ahead = redis.call('ZCARD', K_WAITING)
local t = {id = fresh, number = redis.call('HINCRBY', K_STATE, 'last_number', 1), state = 'WAITING', adm = 0, exp = 0, ck = ck}
save(t)
redis.call('ZADD', K_WAITING, t.number, t.id)
redis.call('ZADD', K_SEEN, now, t.id)
redis.call('HSET', K_CLIENTS, ck, t.id)
return view(t, c, now, ahead)
