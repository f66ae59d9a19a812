#!/usr/bin/env bash
# Where a booking's Redis time goes, per inner command (benches/README.md §16): starts a
# throwaway redis-server and a release slotd on it, registers the applicants (not counted), runs
# a bounded book-spread with --redis-url (slotd-load prints Redis µs per confirmed booking), then
# prints every command the booking functions ran (INFO commandstats counts the commands a
# function calls, each under its own name) per confirmed booking, and the Lua side (FCALL usec
# minus its commands' usec: argument conversion, redis.call round trips, string work).
# Loopback only.
#   benches/book-calls.sh [bookings] [concurrency] [connections]
# Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
# LIBRARY=file: FUNCTION LOAD REPLACE that text (e.g. a variant of `slotd redis library`) after
# slotd loaded its own, to measure a change of the .lua files without a rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=${1:-20000}; C=${2:-32}; N=${3:-4}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_redis; SP=$(free_port)
"${SERVER:-$BIN/slotd}" serve --config benches/load.toml --listen "127.0.0.1:$SP" --redis-url "redis://127.0.0.1:$RP/" \
  >"$WORK/slotd.log" 2>&1 &
pids+=($!)
wait_healthy "$SP" "$WORK/slotd.log"
if [ -n "${LIBRARY:-}" ]; then
  redis-cli -p "$RP" -x function load replace <"$LIBRARY" >/dev/null
fi
SPREAD=(--scenario book-spread --applicants "$B" --run-id 171717)
"$BIN/slotd-load" --target "127.0.0.1:$SP" "${SPREAD[@]}" --setup-only >/dev/null
redis-cli -p "$RP" config resetstat >/dev/null
"$BIN/slotd-load" --target "127.0.0.1:$SP" "${SPREAD[@]}" --skip-setup --requests "$B" --duration 600 \
  --concurrency "$C" --connections "$N" --redis-url "redis://127.0.0.1:$RP/" --json >"$OUT/book-spread.json"
redis-cli -p "$RP" info commandstats >"$OUT/commandstats.txt"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" <<'PY'
import json, sys
sys.path.insert(0, "benches")
import cmdstats
out = sys.argv[1]
r = json.load(open(f"{out}/book-spread.json"))
booked = max(r["bookings_confirmed"], 1)
fcall, rows = cmdstats.read(f"{out}/commandstats.txt")
# slotd's own reads outside any function (slot feed, calendar): shown, not subtracted.
OUTSIDE = ("xrange", "xrevrange", "hvals", "hgetall", "zrange", "hget")
for name, calls, usec in rows:
    if name in OUTSIDE:
        print(f"outside the functions: {name.upper()} {calls} calls, {usec} µs")
rows = [row for row in rows if row[0] not in OUTSIDE]
print(f"{r['bookings_confirmed']} bookings confirmed, {r['ok_per_sec']:.0f}/s, outcomes {r['outcomes']}, passed {r['passed']}")
cmdstats.table(rows, fcall, booked)
PY
echo "raw reports in $OUT"
