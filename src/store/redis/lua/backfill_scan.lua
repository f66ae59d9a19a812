#!lua flags=no-writes
-- backfill_scan: one bounded step of the one-time pass that indexes what was written before the
-- due indexes existed (days opened before `days-due`, waitlist entries joined before `wl-due`).
-- Read-only: it runs one SCAN on the node that owns the deployment's hash tag (a script goes to
-- the node of KEYS[1]; a plain SCAN from a cluster client would go to any node) and returns the
-- deployment's key names it found; slotd indexes them (ZADD NX) and then records the cursor.
--
-- KEYS[1]        backfill state      slotd:{T}:backfill   (`cursor`, `done`)
-- ARGV[1]        match pattern       "slotd:{T}:*"
-- ARGV[2]        SCAN COUNT
--
-- Returns {"DONE"} (the pass has completed) | {"KEYS", next_cursor, key...} (next_cursor "0" =
-- this was the last step) | {"BAD_CALL", detail}
--
-- Invariants: writes nothing; one SCAN of COUNT per call; touches no key but KEYS[1].
local count = tonumber(ARGV[2])
if not count or count < 1 or #KEYS ~= 1 or #ARGV ~= 2 then
  return {'BAD_CALL', 'backfill_scan arguments'}
end
if redis.call('HGET', KEYS[1], 'done') then
  return {'DONE'}
end
local cursor = redis.call('HGET', KEYS[1], 'cursor') or '0'
local found = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', count)
local reply = {'KEYS', found[1]}
for _, key in ipairs(found[2]) do
  reply[#reply + 1] = key
end
return reply
