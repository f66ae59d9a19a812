-- layout: the deployment's key layout marker. slotd checks it at start ("check") and
-- `slotd redis migrate` moves data of the previous layout on ("migrate"), one bounded step per
-- call. Layouts (docs/redis-keys.md, "Key layout versions and migration"):
--   1  before issue #17: every booking also wrote a member of the day's manifest sorted set
--      slotd:{T}:manifest:<POST>:<CAT>:<DATE>, a passport record held a bare claim (<CONF> or
--      hold:<ID>:<expires_ms>) and the receipt's `backing` field the same claim; no marker
--   2  this one: no manifest keys (the manifest is the active index, sorted when read); a
--      passport record is "<claim>|<RECEIPT>" and guards the receipt too, whose `backing` is
--      written only when its appointment is retired (spent). Marker slotd:{T}:layout = "2".
-- A layout-1 slotd still running would keep writing manifest members that layout 2 never
-- removes (and would miss layout 2's bookings in its own listings), hence the refusal.
--
-- KEYS[1]        layout marker       slotd:{T}:layout
-- KEYS[2]        past days index     slotd:{T}:days-due   (every opened day not yet passed)
-- ARGV[1]        "check" | "migrate"
-- ARGV[2]        key prefix "slotd:{T}:" (the manifest keys are derived: cluster_guard.lua
--                runs first on a Redis Cluster)
-- ARGV[3]        migrate: SCAN cursor ("0" to start)
-- ARGV[4]        migrate: SCAN COUNT
--
-- Returns, check: {"OK"} layout 2 (marked now when no layout-1 key was found)
--                | {"LAYOUT", "1", day} a layout-1 manifest exists (of that day): nothing written
--                | {"LAYOUT", marker} a marker this slotd does not know (a newer layout)
--   migrate: {"NEXT", cursor, deleted, moved} one SCAN step done (manifest keys deleted,
--            receipt claims moved) | {"DONE", deleted, moved} the last step:
--            marked "2" | {"LAYOUT", marker} (as above: nothing written) | {"BAD_CALL", detail}
--
-- Invariants: check writes only the marker, and only when no layout-1 key exists; migrate
-- deletes manifest keys (their members are exactly the active index's appointments, which
-- layout 2 lists) and moves each receipt's live claim onto its passport record (a receipt
-- whose `backing` its passport's record names: the record becomes "<claim>|<RECEIPT>" and
-- `backing` goes; a hold claim nobody else names is dropped, a past appointment's number stays:
-- spent), and marks the layout once a full SCAN is done. A step is idempotent.
local mode = ARGV[1]
local prefix = ARGV[2]
if #KEYS ~= 2 or not prefix or (mode ~= 'check' and mode ~= 'migrate') then
  return {'BAD_CALL', 'layout arguments'}
end
local marker = redis.call('GET', KEYS[1])
if marker and marker ~= '2' then
  return {'LAYOUT', marker}
end
if mode == 'check' then
  if marker then
    return {'OK'}
  end
  for _, day in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if redis.call('EXISTS', prefix .. 'manifest:' .. day) == 1 then
      return {'LAYOUT', '1', day}
    end
  end
  redis.call('SET', KEYS[1], '2')
  return {'OK'}
end
local count = tonumber(ARGV[4])
if #ARGV ~= 4 or not count or count < 1 then
  return {'BAD_CALL', 'layout arguments'}
end
local found = redis.call('SCAN', ARGV[3], 'MATCH', prefix .. '*', 'COUNT', count)
local deleted, moved = 0, 0
local manifests, receipts = prefix .. 'manifest:', prefix .. 'receipt:'
for _, key in ipairs(found[2]) do
  if string.sub(key, 1, #manifests) == manifests then
    deleted = deleted + redis.call('DEL', key)
  elseif string.sub(key, 1, #receipts) == receipts then
    local r = redis.call('HMGET', key, 'passport', 'backing')
    if r[1] and r[2] then
      local passport = prefix .. 'passport:' .. r[1]
      if redis.call('GET', passport) == r[2] then
        redis.call('SET', passport, r[2] .. '|' .. string.sub(key, #receipts + 1))
        redis.call('HDEL', key, 'backing')
        moved = moved + 1
      elseif string.sub(r[2], 1, 5) == 'hold:' then
        redis.call('HDEL', key, 'backing')
      end
    end
  end
end
if found[1] == '0' then
  redis.call('SET', KEYS[1], '2')
  return {'DONE', deleted, moved}
end
return {'NEXT', found[1], deleted, moved}
