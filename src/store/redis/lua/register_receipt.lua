-- register_receipt: records a paid MRV fee receipt, idempotently.
--
-- KEYS[1]  receipt hash   slotd:{T}:receipt:<NO>
-- KEYS[2]  events stream  slotd:{T}:events
-- ARGV[1]  passport number
-- ARGV[2]  paid_at, RFC 3339 in UTC with full precision (the canonical text slotd writes)
-- ARGV[3]  expires_ms: paid_at + 365 days, ms since the epoch (what book compares with now)
-- ARGV[4]  amount in minor units
-- ARGV[5]  currency code
-- ARGV[6]  receipt number (event only)
--
-- Returns {"OK", 1} new | {"OK", 0} the identical receipt exists | {"RECEIPT_CONFLICT"}
--
-- Invariant: a receipt's details never change once registered (its `backing` field, the spent
-- mark of a past appointment, is written only by appt_retire; see holds_lib.lua).
local cur = redis.call('HMGET', KEYS[1], 'passport', 'paid_at', 'amount_minor', 'currency')
if cur[1] then
  if cur[1] == ARGV[1] and cur[2] == ARGV[2] and cur[3] == ARGV[4] and cur[4] == ARGV[5] then
    return {'OK', 0}
  end
  return {'RECEIPT_CONFLICT'}
end

redis.call('HSET', KEYS[1], 'passport', ARGV[1], 'paid_at', ARGV[2], 'expires_ms', ARGV[3],
  'amount_minor', ARGV[4], 'currency', ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'receipt_registered', 'receipt', ARGV[6],
  'paid_at', ARGV[2])
return {'OK', 1}
