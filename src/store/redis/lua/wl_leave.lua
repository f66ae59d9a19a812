-- wl_leave: takes an entry out of its waitlist. A pending offer is declined on the way out:
-- its hold's seats return and pass to the next entry in the same script. Leaving a finished
-- entry changes nothing. Prepended with holds_lib.lua.
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
    local member = hhmm .. ':' .. n .. ':' .. e[2]
    if redis.call('ZREM', p .. 'holds:' .. day_label, member) == 1 then
      redis.call('ZREM', p .. 'holds-due', day_label .. ':' .. member)
      local day_key = p .. 'day:' .. day_label
      local held = (tonumber(redis.call('HGET', day_key, hhmm .. ':h') or '0') or 0) - n
      if held < 0 then
        held = 0
      end
      redis.call('HSET', day_key, hhmm .. ':h', held)
      local claim = 'hold:' .. e[2] .. ':' .. h[3]
      local passports, receipts = split_words(e[3]), split_words(e[4])
      for i = 1, #passports do
        if redis.call('HGET', p .. 'receipt:' .. receipts[i], 'backing') == claim then
          redis.call('HDEL', p .. 'receipt:' .. receipts[i], 'backing')
        end
        if redis.call('GET', p .. 'passport:' .. passports[i]) == claim then
          redis.call('DEL', p .. 'passport:' .. passports[i])
        end
      end
      redis.call('HSET', hold_key, 'status', 'RELEASED')
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000000, '*',
        'type', 'hold_released', 'hold', e[2], 'slot', h[4] .. '/' .. h[5] .. '/' .. h[6] .. ' ' .. h[7],
        'seats', n, 'at', o.now_text)
      offer_seats(o, h[4], h[5], h[6], hhmm, n, id)
    end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000000, '*', 'type', 'waitlist_left', 'entry', id)
return {'OK'}
