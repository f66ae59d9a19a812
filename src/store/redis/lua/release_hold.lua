-- release_hold: gives a live hold's seats back and frees its passport and receipt claims.
-- Uses holds_lib.lua helpers. slotd reads the hold record first to name the keys; the script
-- re-checks that read and answers STALE if it does not match.
--
-- KEYS[1]        hold record         slotd:{T}:hold:<HOLD_ID>
-- KEYS[2]        day hash            slotd:{T}:day:<POST>:<CAT>:<DATE>
-- KEYS[3]        holds zset          slotd:{T}:holds:<POST>:<CAT>:<DATE>
-- KEYS[4]        due zset            slotd:{T}:holds-due
-- KEYS[5]        events stream       slotd:{T}:events
-- KEYS[4+2i]     receipt hash of applicant i (i = 1..n)
-- KEYS[5+2i]     passport record of applicant i
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        hold id
-- ARGV[3]        applicants JSON as read
-- ARGV[4]        day label "<POST>:<CAT>:<DATE>"
-- ARGV[5]        now, RFC 3339
-- ARGV[6]        slot time HHMM
-- ARGV[7..11]    offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold
--                record TTL s, nonce (hex, 128 random bits; offer hold ids derive from it)
--
-- Returns {"OK"} | {"REPLAY"} (released before) | {"HOLD_NOT_FOUND"} | {"STALE"}
--       | {"HOLD_EXPIRED", expires_ms} | {"HOLD_NOT_ACTIVE", status}
--       | {"BAD_CALL", detail} | {"CORRUPT", detail}
--
-- Invariant: the seats return once (only while the hold's member exists); a claim is freed only
-- if it still names this hold. The seats go to the date's waitlist first; a released offer is
-- a decline: its entry goes back in line and the seats pass to the next entry. Checks first,
-- writes last.
local now = tonumber(ARGV[1])
local o = offer_context(7, now)
if not now or not o then
  return {'BAD_CALL', 'release_hold arguments'}
end
local hold_id = ARGV[2]
local hhmm = ARGV[6]

-- Checks.
local rec = redis.call('HMGET', KEYS[1], 'status', 'applicants', 'seats', 'expires_ms',
  'post', 'category', 'date', 'time')
if not rec[1] then
  return {'HOLD_NOT_FOUND'}
end
if rec[2] ~= ARGV[3] then
  return {'STALE'}
end
local n = tonumber(rec[3])
local expires = tonumber(rec[4])
if not n or not expires then
  return {'CORRUPT', 'hold record'}
end
if #KEYS ~= 5 + 2 * n then
  return {'BAD_CALL', 'release_hold keys'}
end
if rec[1] == 'RELEASED' then
  return {'REPLAY'}
end
if rec[1] ~= 'HELD' then
  return {'HOLD_NOT_ACTIVE', rec[1]}
end
local expired = expired_holds(KEYS[3], now)
if not expired then
  return {'CORRUPT', 'holds member'}
end
local slot_prefix = rec[5] .. '/' .. rec[6] .. '/' .. rec[7]
if expires <= now then
  reclaim_holds(expired, KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[4], slot_prefix)
  return {'HOLD_EXPIRED', rec[4]}
end
local member = hhmm .. ':' .. n .. ':' .. hold_id
if not redis.call('ZSCORE', KEYS[3], member) then
  -- Already reclaimed by a replica whose clock runs ahead of ours: expired all the same.
  return {'HOLD_EXPIRED', rec[4]}
end

-- Writes.
reclaim_holds(expired, KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[4], slot_prefix)
local receipts, passports = {}, {}
for i = 1, n do
  receipts[i], passports[i] = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
end
release_writes({
  key = KEYS[1], id = hold_id, hhmm = hhmm, n = n, expires = rec[4], day_key = KEYS[2],
  holds_key = KEYS[3], due_key = KEYS[4], events_key = KEYS[5], day_label = ARGV[4],
  slot_label = slot_prefix .. ' ' .. rec[8], now_text = ARGV[5],
  receipts = receipts, passports = passports,
})
local declined = offer_ended(o.prefix, hold_id, false, now)
offer_seats(o, rec[5], rec[6], rec[7], hhmm, n, declined)
return {'OK'}
