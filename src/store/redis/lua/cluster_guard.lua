-- cluster_guard: put by slotd at the start of every function that touches keys it
-- builds itself (the offer step, the moving-entry lookups, wl_retire), when slotd talks to a
-- Redis Cluster. Not a script of its own.
--
-- Redis 7.0 checks each command a script runs like a client command (script.c,
-- scriptVerifyClusterState -> cluster.c getNodeByQuery): while this node is MIGRATING the slot,
-- a command on a key it does not have (moved already, or never written) fails with "Script
-- attempted to access a non local key in a cluster node", which aborts the script after the
-- writes it already made; while this node is IMPORTING the slot (the script came here with
-- ASKING after an ASK), a single-key command on a key still on the source is served as if the
-- key did not exist, so the script would decide on half the data. Declared KEYS are checked
-- before the script starts (all here: run; some missing: TRYAGAIN; all missing: ASK), keys a
-- script builds are not. So before touching anything the script probes the slot:
-- `EXISTS <prefix>probe:a <prefix>probe:b`, two keys of the tag that are never written. On a
-- stable slot that answers 0; on a MIGRATING source both are missing, so getNodeByQuery answers
-- ASK; on an IMPORTING target a multi-key command with missing keys is TRYAGAIN. Either way the
-- probe fails (redis.pcall returns the error) and the script returns at once:
--
-- Returns (from the whole script) {"TRYAGAIN"} while the slot is migrating or importing here;
-- slotd answers UNAVAILABLE (retry with the same request_id), as Redis itself answers
-- TRYAGAIN to multi-key commands meanwhile. Otherwise the script goes on.
--
-- Invariants: nothing is read or written before the probe; the slot's state cannot change
-- while a script runs (scripts are atomic), so a script that passed the probe runs on a stable
-- slot this node serves, where every key of the tag is local. The prefix comes from KEYS[1]
-- (every key is `slotd:{<tag>}:...`).
do
  local prefix = string.match(KEYS[1] or '', '^slotd:{[^}]*}:')
  if not prefix then
    return {'BAD_CALL', 'cluster_guard: KEYS[1] is not a slotd key'}
  end
  local probe = redis.pcall('EXISTS', prefix .. 'probe:a', prefix .. 'probe:b')
  if type(probe) == 'table' and probe.err then
    return {'TRYAGAIN'}
  end
end
