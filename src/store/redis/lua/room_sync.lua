-- room_sync: one replica's one call per tick for every Watch stream it holds.
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2] cursor: the last event sequence the replica applied, or '' (none
-- wanted); ARGV[3] most events to answer; ARGV[4..] ticket ids to heartbeat (the caller chunks
-- them, at most 1,000 a call)
-- Returns {'OK', head, gap (0/1), rate, seq1, event1, seq2, event2, ...}: events after the
-- cursor in sequence order, each "<id>|<number>|<state>|<admission_number>|<expires_ms>"
-- (room_lib log_exit); gap = 1 when the log no longer holds every event after the cursor.
-- Invariant: writes only heartbeats of tickets still waiting (ZADD XX GT: an ended ticket is
-- not brought back, a lagging clock never moves a heartbeat back). Work: O(log n) per heartbeat
-- and per event, nothing per waiter of the line.
local now, max = tonumber(ARGV[1]), tonumber(ARGV[3])
local after = nil
if ARGV[2] ~= '' then
  after = tonumber(ARGV[2])
end
if not now or not max or max < 0 or (ARGV[2] ~= '' and not after) or #ARGV > 1003 then
  return {'BAD_CALL', 'sync arguments'}
end
heartbeat(now, 4)
local s = redis.call('HMGET', K_STATE, 'log_seq', 'enabled_since_ms')
local head = tonumber(s[1]) or 0
local reply = {'OK', head, 0, tostring(rate(config(), now, s[2]))}
if after and after < head and max > 0 then
  local oldest = redis.call('ZRANGE', K_LOG, 0, 0, 'WITHSCORES')
  if #oldest == 0 or tonumber(oldest[2]) > after + 1 then
    reply[3] = 1
  else
    local events = redis.call('ZRANGEBYSCORE', K_LOG, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, max)
    for i = 1, #events, 2 do
      reply[#reply + 1] = tonumber(events[i + 1])
      reply[#reply + 1] = events[i]
    end
  end
end
return reply
