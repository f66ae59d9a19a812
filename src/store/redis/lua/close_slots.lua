-- close_slots: closes one slot, or every slot of a day.
--
-- KEYS[1]  day hash       slotd:{T}:day:<POST>:<CAT>:<YYYY-MM-DD>
-- KEYS[2]  events stream  slotd:{T}:events
-- ARGV[1]  slot time HHMM, or "" for every slot of the day
-- ARGV[2]  day label "POST/CAT/DATE" (event only)
--
-- Returns {"OK", closed} (how many slots were open before) or {"SLOT_NOT_FOUND"} when one
-- named slot does not exist (a whole day without slots closes 0, no refusal).
--
-- Invariant: booked seats are untouched; a closed slot keeps its appointments. Checks first:
-- the slots to close are collected, then written. An event is appended only if a slot closed.
local day = KEYS[1]
local to_close = {}
if ARGV[1] ~= '' then
  local hhmm = ARGV[1]
  local cur = redis.call('HMGET', day, hhmm .. ':c', hhmm .. ':x')
  if not cur[1] then
    return {'SLOT_NOT_FOUND'}
  end
  if cur[2] ~= '1' then
    to_close[1] = hhmm
  end
else
  local all = redis.call('HGETALL', day)
  local closed = {}
  local slots = {}
  for i = 1, #all, 2 do
    local field, value = all[i], all[i + 1]
    local hhmm, kind = string.match(field, '^(%d%d%d%d):(%a)$')
    if kind == 'c' then
      slots[#slots + 1] = hhmm
    elseif kind == 'x' then
      closed[hhmm] = value
    end
  end
  for _, hhmm in ipairs(slots) do
    if closed[hhmm] ~= '1' then
      to_close[#to_close + 1] = hhmm
    end
  end
end

for _, hhmm in ipairs(to_close) do
  redis.call('HSET', day, hhmm .. ':x', 1)
end
if #to_close > 0 then
  local what = ARGV[1]
  if what == '' then
    what = 'day'
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*',
    'type', 'closed', 'day', ARGV[2], 'time', what, 'closed', #to_close)
end
return {'OK', #to_close}
