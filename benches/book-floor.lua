#!lua name=slotd_floor
-- The floor of a booking's Redis cost under slotd's rules (benches/README.md §25): variants of
-- book.lua's single-applicant happy path, in layout 2's call shape (the KEYS and ARGV that
-- benches/book-group.sh builds), each leaving out or merging writes, so a key layout can be
-- priced before it is built. Loaded next to the slotd library by benches/book-floor.sh; never
-- by slotd.
--
-- KEYS and ARGV: as book.lua (day, active, appt, idem, events, receipt, passport, holds, due;
-- now, fingerprint, conf, HHMM, n, ttl, idem record, now text, post, category, date, time,
-- applicants JSON, passport, day label, slot label).
-- Returns {"OK"} when booked; the refusals of book.lua where a check fails (not exercised).
--
-- floor_layout2        book.lua's calls (calibration: should cost what the real function does)
-- floor_packed         the appointment as one string, SET NX (no EXISTS, no 9-field HSET)
-- floor_packed_event1  packed, and an event entry of one field
-- floor_packed_noidem  packed, no idempotency record (not a valid booking: replays break)
-- floor_bare           packed, no idempotency record and no event (not valid: a lower bound)
-- floor_dec            the issue's yardstick: one HINCRBY of one key
local EVENTS_MAXLEN = 1000000

local function receipt_no(key)
  return string.match(key, ':receipt:(.+)$')
end

local function claim_refusal(receipt_key, backing, record, now)
  if backing and string.sub(backing, 1, 5) ~= 'hold:' then
    return 'RECEIPT_IN_USE'
  end
  if record then
    local expires = string.match(record, '^hold:%x+:(%d+)')
    if not expires or tonumber(expires) > now then
      if string.match(record, '|(.*)$') == receipt_no(receipt_key) then
        return 'RECEIPT_IN_USE'
      end
      return 'APPLICANT_ALREADY_BOOKED'
    end
  end
  return nil
end

local function book(keys, args, v)
  local now, conf, hhmm, n = tonumber(args[1]), args[3], args[4], tonumber(args[5])
  local now_text = args[8]
  local seen = redis.call('GET', keys[4])
  if seen then
    local fp, id, expiry = string.match(seen, '^([^|]+)|([^|]+)|(%d+)$')
    if tonumber(expiry) > now then
      return {'REPLAY', id}
    end
  end
  local slot = redis.call('HMGET', keys[1], hhmm .. ':c', hhmm .. ':b', hhmm .. ':x', hhmm .. ':h')
  if not slot[1] then
    return {'SLOT_NOT_FOUND'}
  end
  if tonumber(slot[1]) - tonumber(slot[2] or '0') - tonumber(slot[4] or '0') < n then
    return {'SLOT_FULL'}
  end
  for i = 1, n do
    local receipt = redis.call('HMGET', keys[4 + 2 * i], 'passport', 'expires_ms', 'backing')
    if receipt[1] ~= args[13 + i] then
      return {'RECEIPT_PASSPORT_MISMATCH', i}
    end
    if tonumber(receipt[2]) <= now then
      return {'RECEIPT_EXPIRED', i}
    end
    local refused = claim_refusal(keys[4 + 2 * i], receipt[3], redis.call('GET', keys[5 + 2 * i]), now)
    if refused then
      return {refused, i}
    end
  end
  if v.packed then
    -- The last check is also the first write: nothing is written when the number is taken.
    local value = table.concat({'BOOKED', n, now_text, args[9], args[10], args[11], args[12], args[13]}, '|')
    if not redis.call('SET', keys[3], value, 'NX') then
      return {'CONFIRMATION_TAKEN'}
    end
  elseif redis.call('EXISTS', keys[3]) == 1 then
    return {'CONFIRMATION_TAKEN'}
  end
  redis.call('HINCRBY', keys[1], hhmm .. ':b', n)
  for i = 1, n do
    redis.call('SET', keys[5 + 2 * i], conf .. '|' .. receipt_no(keys[4 + 2 * i]))
  end
  if not v.packed then
    redis.call('HSET', keys[3], 'post', args[9], 'category', args[10], 'date', args[11],
      'time', args[12], 'status', 'BOOKED', 'seats', n, 'created_at', now_text,
      'updated_at', now_text, 'applicants', args[13])
  end
  redis.call('HSET', keys[2], conf, hhmm .. ':' .. n)
  if not v.no_idem then
    redis.call('SET', keys[4], args[7], 'EX', tonumber(args[6]))
  end
  if v.event1 then
    redis.call('XADD', keys[5], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'b', conf)
  elseif not v.no_event then
    redis.call('XADD', keys[5], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
      'type', 'booked', 'confirmation', conf, 'slot', args[15 + n], 'seats', n, 'at', now_text)
  end
  return {'OK'}
end

-- (Explicit registrations: the load-time sandbox of Redis 7.0 has no `pairs`.)
local function register(name, v)
  redis.register_function('floor_' .. name, function(keys, args) return book(keys, args, v) end)
end
register('layout2', {})
register('packed', {packed = true})
register('packed_event1', {packed = true, event1 = true})
register('packed_noidem', {packed = true, no_idem = true})
register('bare', {packed = true, no_idem = true, no_event = true})
redis.register_function('floor_dec', function(keys)
  return redis.call('HINCRBY', keys[1], 'x', -1)
end)
