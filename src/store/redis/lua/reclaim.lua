-- reclaim: returns the seats of every hold of one date expired at `now` (the sweeper's call;
-- hold, book, confirm_hold, release_hold and reschedule do the same for their dates inline).
-- Uses holds_lib.lua helpers.
--
-- KEYS[1]  day hash          slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[2]  holds zset        slotd:{T}:holds:<POST>:<CAT>:<DATE>
-- KEYS[3]  due zset          slotd:{T}:holds-due
-- KEYS[4]  events stream     slotd:{T}:events
-- ARGV[1]  now, ms since the epoch (slotd's clock)
-- ARGV[2]  day label "<POST>:<CAT>:<DATE>" (due members)
-- ARGV[3]  slot prefix "<POST>/<CAT>/<DATE>" (events)
-- ARGV[4..6]  post, category, date
-- ARGV[7..11] offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold record
--             TTL s, nonce (hex, 128 random bits from slotd; offer hold ids derive from it)
--
-- Returns {"OK", reclaimed} | {"CORRUPT", detail}
--
-- Invariant: a hold's seats return exactly once (only the caller that removes its member
-- returns them); nothing is written when a member does not parse. Seats that come back go to
-- the date's waitlist first (waitlist_lib.lua, offer_seats), slot by slot in time order, after
-- all of the date's expired holds are freed; an expired offer ends its entry.
local now = tonumber(ARGV[1])
local o = offer_context(7, now)
if not now or not o then
  return {'BAD_CALL', 'reclaim arguments'}
end
local list, by_hhmm = expired_holds(KEYS[2], now, true)
if not list then
  return {'CORRUPT', 'holds member'}
end
local n = reclaim_holds(list, KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3])
-- Offers after every hold is freed, slot by slot in time order (as the embedded store does):
-- a group needing the seats of two holds reclaimed together gets them in line order.
local times = {}
for hhmm in pairs(by_hhmm) do
  times[#times + 1] = hhmm
end
table.sort(times)
for _, hhmm in ipairs(times) do
  offer_seats(o, ARGV[4], ARGV[5], ARGV[6], hhmm, by_hhmm[hhmm], nil)
end
-- Due entries whose day holds no such member any more (confirmed or released concurrently
-- with a sweep read) are removed by their own scripts; nothing else to do here.
return {'OK', n}
