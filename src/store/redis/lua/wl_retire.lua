-- wl_retire: retires one waitlist entry whose date range has passed (the sweeper, a bounded
-- batch per run): a WAITING entry ends EXPIRED with reason DATES_PASSED and frees its line
-- members and passport keys, so those passports can join again. Uses holds_lib.lua helpers.
--
-- KEYS[1]        entry hash          slotd:{T}:wle:<ENTRY_ID>
-- KEYS[2]        retirement index    slotd:{T}:wl-due   (entry id, score = retire-at ms)
-- KEYS[3]        events stream       slotd:{T}:events
-- ARGV[1]        now, ms since the epoch (slotd's clock)
-- ARGV[2]        entry id
-- ARGV[3]        retry delay, ms (an OFFERED entry is looked at again after its offer TTL)
--
-- Returns {"RETIRED"} | {"SKIPPED"} (not due, or finished already: its index member is
-- dropped) | {"LATER"} (an offer is pending: the offer's own expiry or acceptance ends it)
--       | {"BAD_CALL", detail}
--
-- Invariants: only an entry still in line (WAITING) whose index score is <= now is retired;
-- a passport key is freed only while it names this entry (end_entry); the work is one entry's
-- keys (its lines, at most one per date of its range, and its passports). Checks first.
local now = tonumber(ARGV[1])
local retry = tonumber(ARGV[3])
local id = ARGV[2]
if not now or not retry or not id or id == '' then
  return {'BAD_CALL', 'wl_retire arguments'}
end
local prefix = prefix_of(KEYS[1], 'wle:' .. id)

-- Checks.
local due = tonumber(redis.call('ZSCORE', KEYS[2], id))
if not due or due > now then
  return {'SKIPPED'}
end
local status = redis.call('HGET', KEYS[1], 'status')

-- Writes.
if status == 'OFFERED' then
  redis.call('ZADD', KEYS[2], now + retry, id)
  return {'LATER'}
end
redis.call('ZREM', KEYS[2], id)
if status ~= 'WAITING' then
  return {'SKIPPED'}
end
end_entry(prefix, id, 'EXPIRED', REASON_DATES_PASSED, now)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
  'type', 'waitlist_cancelled', 'entry', id, 'reason', REASON_DATES_PASSED)
return {'RETIRED'}
