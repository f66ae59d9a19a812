-- waitlist_lib: waitlist helpers of slotd's Redis Functions library, loaded after
-- holds_lib.lua (whose hold_ref, claim_live, prefix_of and release_writes they use); assigns
-- offer_ended, which holds_lib.lua declares. Library-level locals, not an operation of its own.
--
-- See docs/redis-keys.md, "Waitlist".
-- The offer step needs keys it cannot know before it runs (the entries in line and their
-- receipts and passports), so it builds them here from the deployment prefix "slotd:{T}:",
-- taken from a key slotd passed. Every such key carries the same hash tag, so it lives in the
-- script's own cluster slot. Keys:
--   wl:<POST>:<CAT>:<DATE>  zset, entries in line that accept the date, score = join sequence
--   wlq:<POST>:<CAT>        zset, every entry in line, score = join sequence (positions)
--   wle:<ID>                hash, the entry (`moves` = the appointment a moving entry moves)
--   wlp:<PASSPORT>          the entry a passport waits in
--   wlshare, wlacc          hashes "<POST>:<CAT>" -> percent offered / share remainder

local function split_words(text)
  local out = {}
  for w in string.gmatch(text or '', '%S+') do
    out[#out + 1] = w
  end
  return out
end

-- Takes an entry out of the line for good: status, reason, the date and position indexes and
-- its passports' claims. `at` (ms) becomes its updated_ms. The finished entry is kept 30 days
-- (WAITLIST_ENDED_KEEP_SECS: its holder can still read how it ended), then expires.
local function end_entry(prefix, id, status, reason, at)
  local key = prefix .. 'wle:' .. id
  local e = redis.call('HMGET', key, 'post', 'category', 'dates', 'passports')
  if not e[1] then
    return
  end
  redis.call('HSET', key, 'status', status, 'updated_ms', at)
  redis.call('EXPIRE', key, WAITLIST_ENDED_KEEP_SECS)
  if reason then
    redis.call('HSET', key, 'reason', reason)
  end
  redis.call('ZREM', prefix .. 'wlq:' .. e[1] .. ':' .. e[2], id)
  for _, d in ipairs(split_words(e[3])) do
    redis.call('ZREM', prefix .. 'wl:' .. e[1] .. ':' .. e[2] .. ':' .. d, id)
  end
  for _, p in ipairs(split_words(e[4])) do
    if redis.call('GET', prefix .. 'wlp:' .. p) == id then
      redis.call('DEL', prefix .. 'wlp:' .. p)
    end
  end
end

-- Why an entry's group may not take seats now (its receipts or passports were used elsewhere
-- since it joined, or a receipt expired), or nil.
local function entry_refusal(prefix, passports, receipts, now)
  for i = 1, #passports do
    local r = redis.call('HMGET', prefix .. 'receipt:' .. receipts[i], 'passport', 'expires_ms',
      'backing')
    if not r[1] then
      return 'RECEIPT_NOT_REGISTERED'
    end
    if r[1] ~= passports[i] then
      return 'RECEIPT_PASSPORT_MISMATCH'
    end
    if (tonumber(r[2]) or 0) <= now then
      return 'RECEIPT_EXPIRED'
    end
    local refused = claim_refusal(prefix .. 'receipt:' .. receipts[i], r[3],
      redis.call('GET', prefix .. 'passport:' .. passports[i]), now)
    if refused then
      return refused
    end
  end
  return nil
end

-- Whether a moving entry's appointment `conf` may move to `label` ("<DATE> <HH:MM>") now:
-- nil = yes, false = not to this slot (it is not earlier), a reason = never (cancel the entry).
local function moving_refusal(prefix, conf, limit, label, receipts)
  local a = redis.call('HMGET', prefix .. 'appt:' .. conf, 'status', 'date', 'time', 'retired')
  -- Cancelled, or retired (past, appt_retire.lua): it can never move again.
  if a[1] ~= 'BOOKED' or a[4] then
    return 'APPOINTMENT_CANCELLED'
  end
  if label >= (a[2] or '') .. ' ' .. (a[3] or '') then
    return false
  end
  for i = 1, #receipts do
    local used = tonumber(redis.call('HGET', prefix .. 'receipt:' .. receipts[i], 'reschedules')
      or '0') or 0
    if used >= limit then
      return 'RESCHEDULE_LIMIT'
    end
  end
  return nil
end

-- Offers the free seats of one slot to the entries in line for its date, in join order, after
-- `released` seats came back (cancel, expiry, release, move away, capacity raised, opened).
-- Each offer is a hold with `entry` set, expiring `o.offer_ms` from now. The post's share
-- setting decides how many of the released seats the line may take (default all). Entries
-- that no longer qualify are cancelled with the reason; `skip` (an entry that just declined)
-- is passed over once. At most `o.scan` entries are looked at. Returns the seats offered.
-- o = {prefix, now, offer_ms, record_ttl, nonce, scan, count}: count numbers the holds made
-- in this call, their ids are sha1(nonce:count) (nonce: 128 random bits from slotd).
local function offer_seats(o, post, cat, date, hhmm, released, skip)
  local p = o.prefix
  local day_label = post .. ':' .. cat .. ':' .. date
  local line = p .. 'wl:' .. day_label
  if released <= 0 or redis.call('EXISTS', line) == 0 then
    return 0
  end
  local day_key = p .. 'day:' .. day_label
  local slot = redis.call('HMGET', day_key, hhmm .. ':c', hhmm .. ':b', hhmm .. ':x', hhmm .. ':h')
  if not slot[1] or slot[3] == '1' then
    return 0
  end
  local free = (tonumber(slot[1]) or 0) - (tonumber(slot[2]) or 0) - (tonumber(slot[4]) or 0)
  if free <= 0 then
    return 0
  end
  local pc = post .. ':' .. cat
  local share = tonumber(redis.call('HGET', p .. 'wlshare', pc) or '100') or 100
  local budget = free
  if share < 100 then
    local acc = (tonumber(redis.call('HGET', p .. 'wlacc', pc) or '0') or 0) + released * share
    local granted = math.floor(acc / 100)
    redis.call('HSET', p .. 'wlacc', pc, acc - granted * 100)
    if granted < budget then
      budget = granted
    end
  end
  local time_text = string.sub(hhmm, 1, 2) .. ':' .. string.sub(hhmm, 3, 4)
  local offered = 0
  local ids = redis.call('ZRANGE', line, 0, o.scan - 1)
  for _, id in ipairs(ids) do
    if budget <= 0 then
      break
    end
    local key = p .. 'wle:' .. id
    local e = redis.call('HMGET', key, 'status', 'seats', 'times', 'passports', 'receipts',
      'applicants', 'moves', 'limit')
    local n = tonumber(e[2])
    if e[1] ~= 'WAITING' and e[1] ~= 'OFFERED' then
      redis.call('ZREM', line, id)
    elseif e[1] == 'WAITING' and id ~= skip and n and n <= budget
        and (e[3] == '' or string.find(' ' .. e[3] .. ' ', ' ' .. hhmm .. ' ', 1, true)) then
      local passports, receipts = split_words(e[4]), split_words(e[5])
      local refused
      if e[7] then
        -- A moving entry: its appointment holds the claims; the offer takes seats only.
        refused = moving_refusal(p, e[7], tonumber(e[8]) or 0, date .. ' ' .. time_text, receipts)
      else
        refused = entry_refusal(p, passports, receipts, o.now)
      end
      if refused == false then
        -- Not earlier than the appointment it would replace: not for this entry.
      elseif refused then
        end_entry(p, id, 'CANCELLED', refused, o.now)
        redis.call('XADD', p .. 'events', 'MAXLEN', '~', EVENTS_MAXLEN, '*',
          'type', 'waitlist_cancelled', 'entry', id, 'reason', refused)
      else
        o.count = o.count + 1
        local hold_id = string.sub(redis.sha1hex(o.nonce .. ':' .. o.count), 1, 32)
        local expires = o.now + o.offer_ms
        local member = hhmm .. ':' .. n .. ':' .. hold_id
        redis.call('HINCRBY', day_key, hhmm .. ':h', n)
        redis.call('ZADD', p .. 'holds:' .. day_label, expires, member)
        redis.call('ZADD', p .. 'holds-due', expires, day_label .. ':' .. member)
        local claim = 'hold:' .. hold_id .. ':' .. expires
        if not e[7] then
          for i = 1, n do
            redis.call('SET', p .. 'passport:' .. passports[i], claim .. '|' .. receipts[i])
          end
        end
        local hold_key = p .. 'hold:' .. hold_id
        redis.call('HSET', hold_key,
          'post', post, 'category', cat, 'date', date, 'time', time_text,
          'status', 'HELD', 'seats', n, 'created_at', o.now_text, 'expires_ms', expires,
          'applicants', e[6], 'entry', id)
        redis.call('EXPIRE', hold_key, o.record_ttl)
        redis.call('HSET', key, 'status', 'OFFERED', 'offer', hold_id, 'updated_ms', o.now)
        redis.call('XADD', p .. 'events', 'MAXLEN', '~', EVENTS_MAXLEN, '*',
          'type', 'offered', 'entry', id, 'hold_ref', hold_ref(hold_id),
          'slot', post .. '/' .. cat .. '/' .. date .. ' ' .. time_text,
          'seats', n, 'expires_ms', expires, 'at', o.now_text)
        budget = budget - n
        offered = offered + n
      end
    end
  end
  return offered
end

-- The offer context of a script: ARGV[first .. first + 4] are the key prefix "slotd:{T}:",
-- now (RFC 3339), the offer TTL (ms), the hold record TTL (s) and a nonce (hex); nil when
-- they do not parse.
local function offer_context(first, now)
  local o = {
    prefix = ARGV[first], now = now, now_text = ARGV[first + 1],
    offer_ms = tonumber(ARGV[first + 2]), record_ttl = tonumber(ARGV[first + 3]),
    nonce = ARGV[first + 4], scan = OFFER_SCAN_LIMIT, count = 0,
  }
  if not o.prefix or not o.offer_ms or not o.record_ttl or not o.nonce or #o.nonce < 16 then
    return nil
  end
  return o
end

-- What happens to an entry whose offer `hold_id` ends other than by acceptance: a decline
-- puts it back in line (its place kept), an expiry ends it. Nothing if the hold is no offer.
-- (Assigns the local holds_lib.lua declares: no global.)
function offer_ended(prefix, hold_id, expired, at)
  local entry = redis.call('HGET', prefix .. 'hold:' .. hold_id, 'entry')
  if not entry then
    return nil
  end
  local key = prefix .. 'wle:' .. entry
  if redis.call('HGET', key, 'offer') ~= hold_id
      or redis.call('HGET', key, 'status') ~= 'OFFERED' then
    return entry
  end
  if expired then
    end_entry(prefix, entry, 'EXPIRED', nil, at)
    redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', EVENTS_MAXLEN, '*',
      'type', 'offer_expired', 'entry', entry, 'hold_ref', hold_ref(hold_id))
  else
    redis.call('HSET', key, 'status', 'WAITING', 'updated_ms', at)
    redis.call('HDEL', key, 'offer')
    redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', EVENTS_MAXLEN, '*',
      'type', 'offer_declined', 'entry', entry, 'hold_ref', hold_ref(hold_id))
  end
  return entry
end

-- Ends moving entry `id` for good with `reason` (its appointment was cancelled, or it can move
-- no more): the seats of its live offer come back at once (an offer to a moving entry claims no
-- passport or receipt) and go to the next entries of that date; one waitlist_cancelled event.
-- Nothing if the entry is not in line. Writes only: the caller decided.
local function cancel_moving_entry(o, id, reason)
  local p = o.prefix
  local key = p .. 'wle:' .. id
  local e = redis.call('HMGET', key, 'status', 'offer')
  if e[1] ~= 'WAITING' and e[1] ~= 'OFFERED' then
    return
  end
  local freed
  if e[1] == 'OFFERED' and e[2] then
    local hold_key = p .. 'hold:' .. e[2]
    local h = redis.call('HMGET', hold_key, 'status', 'seats', 'expires_ms', 'post', 'category',
      'date', 'time')
    local n, expires = tonumber(h[2]), tonumber(h[3])
    if h[1] == 'HELD' and n and expires and expires > o.now and h[7] then
      local day_label = h[4] .. ':' .. h[5] .. ':' .. h[6]
      local hhmm = string.sub(h[7], 1, 2) .. string.sub(h[7], 4, 5)
      local holds_key = p .. 'holds:' .. day_label
      if redis.call('ZSCORE', holds_key, hhmm .. ':' .. n .. ':' .. e[2]) then
        release_writes({
          key = hold_key, id = e[2], hhmm = hhmm, n = n, expires = h[3],
          day_key = p .. 'day:' .. day_label, holds_key = holds_key, due_key = p .. 'holds-due',
          events_key = p .. 'events', day_label = day_label,
          slot_label = h[4] .. '/' .. h[5] .. '/' .. h[6] .. ' ' .. h[7], now_text = o.now_text,
          receipts = {}, passports = {},
        })
        freed = {h[4], h[5], h[6], hhmm, n}
      end
    end
  end
  end_entry(p, id, 'CANCELLED', reason, o.now)
  redis.call('XADD', p .. 'events', 'MAXLEN', '~', EVENTS_MAXLEN, '*',
    'type', 'waitlist_cancelled', 'entry', id, 'reason', reason)
  if freed then
    offer_seats(o, freed[1], freed[2], freed[3], freed[4], freed[5], nil)
  end
end
