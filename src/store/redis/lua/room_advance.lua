-- room_advance: one admission step, whenever called (replicas step through room_tick.lua,
-- which runs the same step under a lease; this is the step alone).
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2] per-step bound B (silent waiters dropped, ended tickets forgotten);
-- ARGV[3] events kept in the log
-- Returns {'OK', admitted} | {'BAD_CALL', detail}
-- Steps, in this order (so admission order is join order among live tickets):
--   1. end admitted sessions past their expiry;
--   2. drop at most B waiters silent for the waiter timeout (found by heartbeat, O(log n + B)),
--      counted from no earlier than the step that followed a gap of more than 3 s (an outage:
--      nobody could heartbeat meanwhile);
--   3. once per second of room time (or at every step while it finds B of them): forget at most
--      B tickets ended over an hour ago, trim the admission log to the last minute and the
--      event log to its last ARGV[3] events;
--   4. refill the token bucket (one second's worth at most) and admit the lowest numbers, as
--      many as the tokens, the active cap and the queue allow (none while paused). A silent
--      waiter that step 2 did not reach yet is dropped here instead of admitted (at most B
--      more), so the bound never lets an abandoned place in.
-- Invariant: over any t seconds at most burst + rate * t admissions; active <= cap; the work of
-- one step is bounded by B and the admissions, whatever the line's length. The step itself is
-- room_lib.lua's `step` (shared with room_tick.lua).
local now, bound, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not now or not bound or not keep or bound < 1 or keep < 1 then
  return {'BAD_CALL', 'advance arguments'}
end
return {'OK', step(config(), now, bound, keep)}
