-- room_end: ends a live ticket (leave, booking completed, operator revocation).
-- KEYS: the ten room keys (room_lib.lua).
-- ARGV[1] now ms; ARGV[2] ticket id; ARGV[3] LEFT | COMPLETED | REVOKED
-- Returns a view (room_lib) | {'TICKET_NOT_FOUND'} | {'BAD_CALL', detail}
-- Invariant: the place or session is freed exactly once; an ended ticket stays as it is.
local now = tonumber(ARGV[1])
local state = ARGV[3]
if not now or not ARGV[2] or not (state == 'LEFT' or state == 'COMPLETED' or state == 'REVOKED') then
  return {'BAD_CALL', 'end arguments'}
end
local t = load(ARGV[2])
if not t then
  return {'TICKET_NOT_FOUND'}
end
finish(t, state, now)
return view(t, config(), now)
