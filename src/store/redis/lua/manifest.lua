#!lua flags=no-writes
-- manifest: the next page of a day's manifest as members, in (time, confirmation) order
-- (read only). slotd then reads the appointments of the page.
--
-- KEYS[1]  manifest zset   slotd:{T}:manifest:<POST>:<CAT>:<DATE>  (score 0, member <MMMM>-<CONF>)
-- KEYS[2]  active index    slotd:{T}:active:<POST>:<CAT>:<DATE>    (CONF -> HHMM:seats)
-- ARGV[1]  lexicographic start: "-" for the first page, "(" .. cursor for the next ones
--          (a cursor is ManifestCursor::encode, equal to the member it stopped at)
-- ARGV[2]  how many members to return at most (page size + 1, so slotd knows a next page exists)
-- ARGV[3]  "1" to include cancelled appointments, "0" for active (BOOKED) ones only
--
-- Returns the members, at most ARGV[2] of them.
--
-- Invariant: a cursor stays valid while bookings arrive (members are removed only when a
-- reschedule moves an appointment away; ZRANGEBYLEX "(cursor" still starts after it).
local want = tonumber(ARGV[2])
local include_cancelled = ARGV[3] == '1'
local start = ARGV[1]
local chunk = 256
local out = {}
while want and #out < want do
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, chunk)
  for _, member in ipairs(batch) do
    if include_cancelled or redis.call('HEXISTS', KEYS[2], string.sub(member, 6)) == 1 then
      out[#out + 1] = member
      if #out >= want then
        break
      end
    end
  end
  if #batch < chunk then
    break
  end
  start = '(' .. batch[#batch]
end
return out
