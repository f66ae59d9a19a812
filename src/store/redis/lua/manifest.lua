#!lua flags=no-writes
-- manifest: the next page of a day's manifest as members, in (time, confirmation) order
-- (read only). slotd then reads the appointments of the page.
--
-- KEYS[1]  manifest zset   slotd:{T}:manifest:<POST>:<CAT>:<DATE>  (score 0, member <MMMM>-<CONF>)
-- KEYS[2]  active index    slotd:{T}:active:<POST>:<CAT>:<DATE>    (CONF -> HHMM:seats)
-- KEYS[3]  cancelled index slotd:{T}:cancelled:<POST>:<CAT>:<DATE> (as the manifest; cancel
--          moves a member here, so the manifest holds live appointments only)
-- ARGV[1]  lexicographic start: "-" for the first page, "(" .. cursor for the next ones
--          (a cursor is ManifestCursor::encode, equal to the member it stopped at)
-- ARGV[2]  how many members to return at most (page size + 1, so slotd knows a next page exists)
-- ARGV[3]  "1" to include cancelled appointments, "0" for active (BOOKED) ones only
-- ARGV[4]  scan budget: members examined at most in this call (MANIFEST_SCAN_BUDGET)
--
-- Returns {members, resume}: the members (at most ARGV[2]), and resume = the last member
-- examined when the budget ran out before ARGV[2] members were found ("" otherwise): the page
-- is then short and the next one starts after `resume`.
--
-- Invariant: a cursor stays valid while bookings arrive (members are removed when a reschedule
-- moves an appointment away or a cancel moves it to the cancelled index; ZRANGEBYLEX "(cursor"
-- still starts after it, in both sets, which share the order). The work of one call is bounded:
-- with cancelled ones, at most ARGV[2] members of each set are read and merged; without, the
-- budget bounds the manifest members examined (members cancelled before the cancelled index
-- existed are filtered out with the active index).
local want = tonumber(ARGV[2])
local include_cancelled = ARGV[3] == '1'
local budget = tonumber(ARGV[4])
local start = ARGV[1]
local chunk = 256
local out = {}
if want and include_cancelled then
  local live = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, want)
  local gone = redis.call('ZRANGEBYLEX', KEYS[3], start, '+', 'LIMIT', 0, want)
  local i, j = 1, 1
  while #out < want and (i <= #live or j <= #gone) do
    if j > #gone or (i <= #live and live[i] < gone[j]) then
      out[#out + 1] = live[i]
      i = i + 1
    else
      out[#out + 1] = gone[j]
      j = j + 1
    end
  end
  return {out, ''}
end
local scanned = 0
local resume = ''
while want and budget and #out < want and scanned < budget do
  local take = math.min(chunk, budget - scanned)
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, take)
  for _, member in ipairs(batch) do
    scanned = scanned + 1
    if include_cancelled or redis.call('HEXISTS', KEYS[2], string.sub(member, 6)) == 1 then
      out[#out + 1] = member
      if #out >= want then
        break
      end
    end
    if scanned >= budget then
      resume = member
      break
    end
  end
  if #out >= want or resume ~= '' or #batch < take then
    break
  end
  start = '(' .. batch[#batch]
end
return {out, resume}
