-- wl_leave: takes an entry out of its waitlist. A pending offer is declined on the way out:
-- its hold's seats return and pass to the next entry in the same script. Leaving a finished
-- entry changes nothing. Uses holds_lib.lua helpers.
--
-- KEYS[1]        entry hash          slotd:{T}:wle:<ENTRY_ID>
-- KEYS[2]        events stream       slotd:{T}:events
-- ARGV[1]        now, ms since the epoch
-- ARGV[2]        entry id
-- ARGV[3..7]     offer context: key prefix "slotd:{T}:", now RFC 3339, offer TTL ms, hold
--                record TTL s, nonce (hex, 128 random bits; offer hold ids derive from it)
--
-- Returns {"OK"} | {"NOT_FOUND"} | {"BAD_CALL", detail}
--
-- Invariants: an offer's seats return once (only while its holds member exists, as in
-- release_hold.lua); a claim is freed only if it still names the offer. Checks first.
local now = tonumber(ARGV[1])
local o = offer_context(3, now)
if not now or not o then
  return {'BAD_CALL', 'wl_leave arguments'}
end
local id = ARGV[2]
local p = o.prefix

-- Checks.
local e = redis.call('HMGET', KEYS[1], 'status', 'offer', 'passports', 'receipts')
if not e[1] then
  return {'NOT_FOUND'}
end
if e[1] ~= 'WAITING' and e[1] ~= 'OFFERED' then
  return {'OK'}
end

-- Writes.
end_entry(p, id, 'LEFT', nil, now)
if e[1] == 'OFFERED' and e[2] then
  local hold_key = p .. 'hold:' .. e[2]
  local h = redis.call('HMGET', hold_key, 'status', 'seats', 'expires_ms', 'post', 'category',
    'date', 'time')
  local n, expires = tonumber(h[2]), tonumber(h[3])
  if h[1] == 'HELD' and n and expires and expires > now then
    local hhmm = string.sub(h[7], 1, 2) .. string.sub(h[7], 4, 5)
    local day_label = h[4] .. ':' .. h[5] .. ':' .. h[6]
    if redis.call('ZSCORE', p .. 'holds:' .. day_label, hhmm .. ':' .. n .. ':' .. e[2]) then
      local receipts, passports = {}, {}
      for i, r in ipairs(split_words(e[4])) do
        receipts[i] = p .. 'receipt:' .. r
      end
      for i, x in ipairs(split_words(e[3])) do
        passports[i] = p .. 'passport:' .. x
      end
      release_writes({
        key = hold_key, id = e[2], hhmm = hhmm, n = n, expires = h[3],
        day_key = p .. 'day:' .. day_label, holds_key = p .. 'holds:' .. day_label,
        due_key = p .. 'holds-due', events_key = KEYS[2], day_label = day_label,
        slot_label = h[4] .. '/' .. h[5] .. '/' .. h[6] .. ' ' .. h[7], now_text = o.now_text,
        receipts = receipts, passports = passports,
      })
      offer_seats(o, h[4], h[5], h[6], hhmm, n, id)
    end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'waitlist_left', 'entry', id)
return {'OK'}
