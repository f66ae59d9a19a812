#!lua flags=no-writes
-- manifest: the next page of a day's manifest as members "<MMMM>-<CONF>", in (time,
-- confirmation) order (read only). slotd then reads the appointments of the page.
--
-- Layout 2 (docs/redis-keys.md): there is no manifest sorted set any more. The live (BOOKED)
-- appointments of a day are its active index, which every booking writes anyway; this call
-- sorts them when read (a day holds at most its capacity: O(live appointments of the day) per
-- page, against a sorted-set member per booking before, the booking's costliest command).
--
-- KEYS[1]  active index    slotd:{T}:active:<POST>:<CAT>:<DATE>    (CONF -> HHMM:seats)
-- KEYS[2]  cancelled index slotd:{T}:cancelled:<POST>:<CAT>:<DATE> (score 0, member
--          <MMMM>-<CONF>; cancel adds one, a cancelled appointment leaves the active index)
-- ARGV[1]  lexicographic start: "-" for the first page, "(" .. cursor for the next ones
--          (a cursor is ManifestCursor::encode, equal to the member it stopped at)
-- ARGV[2]  how many members to return at most (page size + 1, so slotd knows a next page exists)
-- ARGV[3]  "1" to include cancelled appointments, "0" for active (BOOKED) ones only
--
-- Returns {members, ""}: the members (at most ARGV[2]); the second part (a resume point, once a
-- scan budget's) is always "" now that a page never skips members. {"CORRUPT"} raises an error.
--
-- Invariant: a cursor stays valid while bookings arrive (a page starts strictly after the
-- cursor in member order, whether or not the member is still there); both sets share the order.
local want = tonumber(ARGV[2])
local include_cancelled = ARGV[3] == '1'
local start = ARGV[1]
if not want or want < 1 or (start ~= '-' and string.sub(start, 1, 1) ~= '(') then
  return redis.error_reply('manifest arguments')
end
local after = nil
if start ~= '-' then
  after = string.sub(start, 2)
end
local live = {}
local active = redis.call('HGETALL', KEYS[1])
for i = 1, #active, 2 do
  local h, m = string.match(active[i + 1], '^(%d%d)(%d%d):')
  if not h then
    return redis.error_reply('active index entry ' .. active[i])
  end
  local member = string.format('%04d', tonumber(h) * 60 + tonumber(m)) .. '-' .. active[i]
  if not after or member > after then
    live[#live + 1] = member
  end
end
table.sort(live)
local out = {}
if include_cancelled then
  local gone = redis.call('ZRANGEBYLEX', KEYS[2], start, '+', 'LIMIT', 0, want)
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
for i = 1, math.min(want, #live) do
  out[i] = live[i]
end
return {out, ''}
