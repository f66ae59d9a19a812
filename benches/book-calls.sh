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
import json, re, sys
out = sys.argv[1]
r = json.load(open(f"{out}/book-spread.json"))
booked = max(r["bookings_confirmed"], 1)
rows, fcall = [], None
for line in open(f"{out}/commandstats.txt"):
    m = re.match(r"cmdstat_([a-z|]+):calls=(\d+),usec=(\d+),", line)
    if not m: continue
    name, calls, usec = m.group(1), int(m.group(2)), int(m.group(3))
    if name == "fcall": fcall = (calls, usec)
    elif name in ("xrange", "xrevrange", "hvals", "hgetall", "zrange", "hget"):
        # slotd's own reads outside any function (slot feed, calendar): shown, not subtracted.
        print(f"outside the functions: {name.upper()} {calls} calls, {usec} µs")
    elif name not in ("info", "config|resetstat", "ping"): rows.append((name, calls, usec))
print(f"{r['bookings_confirmed']} bookings confirmed, {r['ok_per_sec']:.0f}/s, outcomes {r['outcomes']}, passed {r['passed']}")
print("| command | calls per booking | µs per call | µs per booking |")
print("|---|---|---|---|")
inner = 0
for name, calls, usec in sorted(rows, key=lambda x: -x[2]):
    inner += usec
    print(f"| {name.upper()} | {calls/booked:.2f} | {usec/calls:.2f} | {usec/booked:.2f} |")
print(f"| **commands, total** | {sum(c for _, c, _ in rows)/booked:.2f} | | **{inner/booked:.2f}** |")
if fcall:
    print(f"| **Lua side** (FCALL − its commands) | | | **{(fcall[1]-inner)/booked:.2f}** |")
    print(f"| **FCALL** (cmdstat_fcall) | {fcall[0]/booked:.2f} | {fcall[1]/fcall[0]:.2f} | **{fcall[1]/booked:.2f}** |")
PY
echo "raw reports in $OUT"
