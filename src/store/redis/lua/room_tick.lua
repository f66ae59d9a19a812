-- room_tick: one replica's one call per tick (`Room::tick`): the settings, an admission step if
-- the step lease says one is due, and the sync of the replica's Watch streams (room_sync.lua's
-- heartbeats and events), in one round trip instead of three calls.
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms (room time); ARGV[2] step lease L ms (0: always step); ARGV[3] per-step bound B;
-- ARGV[4] events kept in the log; ARGV[5] cursor: the last event sequence the replica applied,
-- or '' (no events wanted); ARGV[6] most events to answer (0 with cursor '': no sync at all);
-- ARGV[7..] ticket ids to heartbeat (at most 1,000; the caller sends the rest to room_sync)
-- Returns {'OK', enabled, rate, cap, session, timeout, paused, gate, admitted, head, gap,
--          observed rate, seq1, event1, seq2, event2, ...}
--   the seven settings as stored (each '' when the hash has no such field: slotd reads an empty
--   hash as the defaults and a partial one as corrupt, as its HGETALL did); admitted = -1 when
--   no step ran (room off, or the lease not due), else the step's admissions; head, gap, the
--   observed rate and the events as room_sync.lua answers them (head 0, gap 0, rate '' and no
--   events when no sync was asked).
--   | {'BAD_CALL', detail}
-- The step lease: the room steps when at least L ms of Redis's own clock (TIME: one clock for
-- every replica, whatever their skew) passed since the last step of any replica, or that clock
-- went back; so N replicas ticking every L ms cost about one step per L ms, not N. The step is
-- room_lib.lua's `step` (room_advance.lua's header says what it does); admissions depend on
-- the token bucket (elapsed room time), not on who steps or how often, so the rate bound
-- burst + rate * t, the active cap and the join order hold as with every replica stepping.
-- Invariants: the arguments are checked before any write; the sync writes only heartbeats of
-- tickets still waiting (ZADD XX GT). Work: the step's (bounded by B and the admissions), plus
-- O(log n) per heartbeat and per event, nothing per waiter of the line.
local now, lease, bound, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local after = nil
if ARGV[5] ~= '' then
  after = tonumber(ARGV[5])
end
local max = tonumber(ARGV[6])
if not now or not lease or not bound or not keep or bound < 1 or keep < 1 or lease < 0
    or not max or max < 0 or (ARGV[5] ~= '' and not after) or #ARGV > 1006 then
  return {'BAD_CALL', 'tick arguments'}
end
local raw = config_fields()
local c = config_of(raw)
local reply = {'OK'}
for i = 1, 7 do
  reply[i + 1] = raw[i] or ''
end

local s = redis.call('HMGET', K_STATE, 'log_seq', 'enabled_since_ms', 'step_at')
local admitted = -1
if c.enabled then
  local clock = redis.call('TIME')
  local at = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local last = tonumber(s[3])
  if not last or at - last >= lease or at < last then
    redis.call('HSET', K_STATE, 'step_at', at)
    admitted = step(c, now, bound, keep)
    -- The step logged its admissions and drops: the head moved.
    s[1] = redis.call('HGET', K_STATE, 'log_seq')
  end
end
reply[9] = admitted

local sync = after or max > 0 or #ARGV > 6
heartbeat(now, 7)
if not sync then
  reply[10], reply[11], reply[12] = 0, 0, ''
  return reply
end
local head = tonumber(s[1]) or 0
reply[10], reply[11], reply[12] = head, 0, tostring(rate(c, now, s[2]))
if after and after < head and max > 0 then
  -- The log holds every event after the cursor iff the first one kept after it is after + 1
  -- (sequence numbers have no holes; the log is trimmed from its oldest end).
  local events = redis.call('ZRANGEBYSCORE', K_LOG, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, max)
  if #events == 0 or tonumber(events[2]) > after + 1 then
    reply[11] = 1
  else
    for i = 1, #events, 2 do
      reply[#reply + 1] = tonumber(events[i + 1])
      reply[#reply + 1] = events[i]
    end
  end
end
return reply
