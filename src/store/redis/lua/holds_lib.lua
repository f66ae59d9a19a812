-- holds_lib: hold and claim helpers of slotd's Redis Functions library (functions.rs assembles
-- it: generated constants, this file, waitlist_lib.lua, then one function per operation file).
-- Library-level locals: every operation may call them. Not an operation of its own.
--
-- A hold keeps its seats as member "<HHMM>:<seats>:<HOLD_ID>" of the day's holds sorted set,
-- scored by its expiry (ms), mirrored in the global due set as "<DAY>:<member>" for the
-- sweeper, and counted in the day hash field "<HHMM>:h". Its seats are held exactly while that
-- member exists: whoever removes it (confirm, release, reclaim) moves the seats, once.
-- A passport record is "<claim>|<RECEIPT>" (layout 2): the claim is an appointment number, or
-- "hold:<ID>:<expires_ms>" for a hold, a claim that lapses by itself at the expiry (so reclaiming
-- touches only the date's keys), and RECEIPT the receipt the claim uses. One record guards both
-- rules: a receipt is registered to one passport and only used with it, so the receipt is in use
-- exactly while its passport's record claims with it. A receipt's `backing` field is written
-- only when its appointment is retired as past (`<CONF>`: the fee is spent for good).

-- What events name a hold by: 16 hex digits of SHA-1("hold:<ID>"), a reference that grants
-- nothing (hold ids are bearer credentials and never enter the event stream); the same as
-- HoldId::reference in Rust.
local function hold_ref(id)
  return string.sub(redis.sha1hex('hold:' .. id), 1, 16)
end

-- Whether a passport record "<claim>|<RECEIPT>" (or a bare claim) still claims: an appointment
-- number always, a hold claim "hold:<ID>:<expires_ms>" until its expiry.
local function claim_live(value, now)
  if not value then
    return false
  end
  local expires = string.match(value, '^hold:%x+:(%d+)')
  if expires then
    return tonumber(expires) > now
  end
  return true
end

-- The receipt number of a receipt key "slotd:{T}:receipt:<NO>" (the tag has no colon).
local function receipt_no(key)
  return string.match(key, ':receipt:(.+)$')
end

-- Why the applicant of receipt `receipt_key` with passport record value `record` and receipt
-- `backing` field may not take a claim at `now`, or nil: RECEIPT_IN_USE when the receipt is spent (a past
-- appointment's, `backing`; a hold claim left there by layout 1 claims nothing) or its
-- passport's live claim uses it, APPLICANT_ALREADY_BOOKED when the passport's live claim uses
-- another receipt.
local function claim_refusal(receipt_key, backing, record, now)
  if backing and string.sub(backing, 1, 5) ~= 'hold:' then
    return 'RECEIPT_IN_USE'
  end
  if claim_live(record, now) then
    if string.match(record, '|(.*)$') == receipt_no(receipt_key) then
      return 'RECEIPT_IN_USE'
    end
    return 'APPLICANT_ALREADY_BOOKED'
  end
  return nil
end

-- Expired holds of a day at `now` (read only): list of {member, hhmm, seats, id, expires_ms}
-- and seats per HHMM; nil when a member does not parse. Unless `all` is set (the sweeper), a
-- date someone waits for (its waitlist key exists) reports none: those seats must go to the
-- waitlist first, which the sweeper does within about a second; until then they count as held
-- (errs towards refusing, never overbooks).
local function expired_holds(holds_key, now, all)
  if not all and redis.call('EXISTS', (string.gsub(holds_key, ':holds:', ':wl:', 1))) == 1 then
    return {}, {}
  end
  local members = redis.call('ZRANGEBYSCORE', holds_key, '-inf', now, 'WITHSCORES')
  local list, by_hhmm = {}, {}
  for i = 1, #members, 2 do
    local m = members[i]
    local hhmm, seats, id = string.match(m, '^(%d%d%d%d):(%d+):(%x+)$')
    if not hhmm then
      return nil, nil
    end
    seats = tonumber(seats)
    list[#list + 1] = {m, hhmm, seats, id, members[i + 1]}
    by_hhmm[hhmm] = (by_hhmm[hhmm] or 0) + seats
  end
  return list, by_hhmm
end

-- The prefix "slotd:{T}:" of a key named `<prefix><suffix>`.
local function prefix_of(key, suffix)
  return string.sub(key, 1, #key - #suffix)
end

-- The writes of releasing a live hold whose member "<HHMM>:<n>:<ID>" is still in the day's
-- holds set (ReleaseHold, and leaving the waitlist with a pending offer): its seats come back,
-- passport and receipt claims that still name it are freed, it is RELEASED, one hold_released
-- event. h = {key, id, hhmm, n, expires (text), day_key, holds_key, due_key, events_key,
-- day_label, slot_label, now_text, receipts = {keys}, passports = {keys}}.
local function release_writes(h)
  local member = h.hhmm .. ':' .. h.n .. ':' .. h.id
  redis.call('ZREM', h.holds_key, member)
  redis.call('ZREM', h.due_key, h.day_label .. ':' .. member)
  local held = (tonumber(redis.call('HGET', h.day_key, h.hhmm .. ':h') or '0') or 0) - h.n
  if held < 0 then
    held = 0
  end
  redis.call('HSET', h.day_key, h.hhmm .. ':h', held)
  local claim = 'hold:' .. h.id .. ':' .. h.expires .. '|'
  for i = 1, #h.receipts do
    if redis.call('GET', h.passports[i]) == claim .. receipt_no(h.receipts[i]) then
      redis.call('DEL', h.passports[i])
    end
  end
  redis.call('HSET', h.key, 'status', 'RELEASED')
  redis.call('XADD', h.events_key, 'MAXLEN', '~', EVENTS_MAXLEN, '*',
    'type', 'hold_released', 'hold_ref', hold_ref(h.id), 'slot', h.slot_label, 'seats', h.n, 'at', h.now_text)
end

-- Defined in waitlist_lib.lua (the library loads it after this file): reclaiming an expired
-- offer hold ends the offer.
local offer_ended

-- Returns the seats of the expired holds found by expired_holds (writes) and appends one
-- hold_expired event each. `day_label` is "<POST>:<CAT>:<DATE>" (due members),
-- `slot_prefix` "<POST>/<CAT>/<DATE>" (event slots).
local function reclaim_holds(list, day_key, holds_key, due_key, events_key, day_label, slot_prefix)
  for _, h in ipairs(list) do
    if redis.call('ZREM', holds_key, h[1]) == 1 then
      redis.call('ZREM', due_key, day_label .. ':' .. h[1])
      offer_ended(prefix_of(due_key, 'holds-due'), h[4], true, tonumber(h[5]))
      local held = (tonumber(redis.call('HGET', day_key, h[2] .. ':h') or '0') or 0) - h[3]
      if held < 0 then
        held = 0
      end
      redis.call('HSET', day_key, h[2] .. ':h', held)
      redis.call('XADD', events_key, 'MAXLEN', '~', EVENTS_MAXLEN, '*',
        'type', 'hold_expired', 'hold_ref', hold_ref(h[4]),
        'slot', slot_prefix .. ' ' .. string.sub(h[2], 1, 2) .. ':' .. string.sub(h[2], 3, 4),
        'seats', h[3], 'expires_ms', h[5])
    end
  end
  return #list
end

-- The group rules of a booking or a hold, read only: for applicant i (1..n) the receipt hash is
-- KEYS[base + 2i], the passport record KEYS[base + 1 + 2i] and the passport number
-- ARGV[passport_argv + i].
-- Each receipt must be registered, paid for that passport, unexpired at `now` and back no live
-- claim; each passport must have no live claim. Returns the first refusal, or nil.
local function check_applicants(n, now, passport_argv, base)
  for i = 1, n do
    local receipt = redis.call('HMGET', KEYS[base + 2 * i], 'passport', 'expires_ms', 'backing')
    if not receipt[1] then
      return {'RECEIPT_NOT_REGISTERED', i}
    end
    if receipt[1] ~= ARGV[passport_argv + i] then
      return {'RECEIPT_PASSPORT_MISMATCH', i}
    end
    local expires = tonumber(receipt[2])
    if not expires then
      return {'CORRUPT', 'receipt expiry'}
    end
    if expires <= now then
      return {'RECEIPT_EXPIRED', i, receipt[2]}
    end
    local refused = claim_refusal(KEYS[base + 2 * i], receipt[3],
      redis.call('GET', KEYS[base + 1 + 2 * i]), now)
    if refused then
      return {refused, i}
    end
  end
  return nil
end

-- The idempotency record "<fingerprint>|<id>|<expiry ms>": nil when absent or lapsed,
-- else {fingerprint, id}; false when it does not parse.
local function remembered(key, now)
  local seen = redis.call('GET', key)
  if not seen then
    return nil
  end
  local fp, id, expiry = string.match(seen, '^([^|]+)|([^|]+)|(%d+)$')
  if not fp then
    return false
  end
  if tonumber(expiry) <= now then
    return nil
  end
  return {fp, id}
end

-- A waiting-room admission's steps other than its booking (holds, reschedules, cancellations,
-- waitlist joins), checked and counted inside the step's own script: the admission hash
-- slotd:{T}:admission:<TICKET_ID> (fields `booked`, the one appointment it made, written by
-- book.lua / confirm_hold.lua, and `steps`) shares the booking hash tag for that. `key` is nil
-- for a call under no admission. The check is a read (call it with the other checks); the
-- count is a write (call it with the other writes), so a refused step counts nothing and a
-- step that happened is counted in the same atomic script, whatever happens to the call.
-- Returns nil, or the refusal {"ADMISSION_USED"} | {"EXHAUSTED", limit}.
local function admission_step_refusal(key, limit)
  if not key then
    return nil
  end
  local rec = redis.call('HMGET', key, 'booked', 'steps')
  if rec[1] then
    return {'ADMISSION_USED'}
  end
  if (tonumber(rec[2] or '0') or 0) >= limit then
    return {'EXHAUSTED', limit}
  end
  return nil
end

local function count_admission_step(key, ttl)
  if key then
    redis.call('HINCRBY', key, 'steps', 1)
    redis.call('EXPIRE', key, ttl)
  end
end
