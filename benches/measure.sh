#!/usr/bin/env bash
# Measures the ratios of benches/README.md in one go, on one machine, with one client setting:
# starts a throwaway redis-server and a release slotd on it, runs slotd-load's scenarios one after
# the other, and reads Redis CPU per booking from INFO commandstats. Loopback only.
#   benches/measure.sh [concurrency] [connections] [seconds]
# Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli,
# redis-benchmark (Debian: redis-server, redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
C=${1:-64}; N=${2:-4}; D=${3:-10}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
OUT=${OUT:-$(mktemp -d)}
# Two distinct free ports at once (two separate probes could return the same port twice).
free_ports() { python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])'; }
WORK=$(mktemp -d); read -r RP SP < <(free_ports)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly "${APPENDONLY:-no}" \
  --appendfsync "${APPENDFSYNC:-always}" --maxmemory-policy noeviction >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SLOTD_ADMIN_TOKEN="measure-admin-token-$RANDOM$RANDOM"
# Required with Redis (tickets and tokens outlive the process); >= 32 characters.
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
"${SERVER:-$BIN/slotd}" serve --config benches/load.toml --listen "127.0.0.1:$SP" --redis-url "redis://127.0.0.1:$RP/" \
  >"$WORK/slotd.log" 2>&1 &
SLOTD_PID=$!; pids+=($SLOTD_PID)
ready=0
for _ in $(seq 100); do "$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario ping --requests 1 \
  --concurrency 1 --connections 1 >/dev/null 2>&1 && { ready=1; break; }; sleep 0.2; done
[ "$ready" = 1 ] || { echo "slotd did not become healthy"; cat "$WORK/slotd.log"; exit 1; }
load() { local name=$1; shift
  "$BIN/slotd-load" --target "127.0.0.1:$SP" --concurrency "$C" --connections "$N" --duration "$D" \
    --json "$@" >"$OUT/$name.json"
  python3 -c "import json,sys; r=json.load(open('$OUT/$name.json')); print('%-12s %9.0f req/s  ok %9.0f/s  p50 %6d us  p99 %6d us  passed %s' % ('$name', r['throughput_per_sec'], r['ok_per_sec'], r['latency_us']['p50'], r['latency_us']['p99'], r['passed']))"
}
load ping --scenario ping
# Setup (slots, receipts) first, so commandstats below count the bookings' scripts only.
SPREAD=(--scenario book-spread --applicants "${SPREAD_APPLICANTS:-60000}" --run-id 424242)
"$BIN/slotd-load" --target "127.0.0.1:$SP" "${SPREAD[@]}" --setup-only >/dev/null
redis-cli -p "$RP" config resetstat >/dev/null
load book-spread "${SPREAD[@]}" --skip-setup --redis-url "redis://127.0.0.1:$RP/"
redis-cli -p "$RP" info commandstats >"$OUT/commandstats-book-spread.txt"
load book-hot --scenario book-hot --applicants 3000 --hot-seats 1000
load calendar --scenario calendar
load ping2 --scenario ping
# p99 of book-spread at half its maximum throughput, open loop.
HALF=$(python3 -c "import json; print(max(1, int(json.load(open('$OUT/book-spread.json'))['ok_per_sec'] / 2)))")
load book-spread-half --scenario book-spread --applicants "${SPREAD_APPLICANTS:-60000}" --rate "$HALF"
# Bare one-key decrement script, same Redis, redis-benchmark defaults (50 clients, no pipelining).
SHA=$(redis-cli -p "$RP" script load "return redis.call('HINCRBY', KEYS[1], 'b', -1)")
redis-cli -p "$RP" config resetstat >/dev/null
redis-benchmark -p "$RP" -c 50 -n 200000 -q evalsha "$SHA" 1 'bench:{b}:day' | tr '\r' '\n' | tail -n 2 >"$OUT/redis-benchmark.txt"
redis-cli -p "$RP" info commandstats >"$OUT/commandstats-bare.txt"
# Server RSS with 10,000 open Watch streams (the room paused, so everyone keeps waiting); slotd
# allows 256 streams per connection, hence 48 connections.
"$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario watch --concurrency 10000 --connections 48 \
  --duration 20 --server-pid "$SLOTD_PID" --json >"$OUT/watch.json" || true
python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
r = {n: json.load(open(f"{out}/{n}.json")) for n in ["ping", "book-spread", "book-hot", "calendar", "ping2", "book-spread-half", "watch"]}
def usec(path):
    total, calls = 0, 0
    for line in open(path):
        m = re.match(r"cmdstat_(fcall|evalsha|eval):calls=(\d+),usec=(\d+),", line)
        if m: calls += int(m.group(2)); total += int(m.group(3))
    return total, calls
ping = (r["ping"]["throughput_per_sec"] + r["ping2"]["throughput_per_sec"]) / 2
spread = r["book-spread"]["ok_per_sec"]
u, _ = usec(f"{out}/commandstats-book-spread.txt")
b, bc = usec(f"{out}/commandstats-bare.txt")
# slotd-load's own figure (cmdstat_fcall around the run, --redis-url); the file's as a fallback.
per_booking = (r["book-spread"].get("redis") or {}).get("usec_per_booking") or u / max(r["book-spread"]["bookings_confirmed"], 1)
per_bare = b / max(bc, 1)
print(f"ping (mean of before/after) {ping:.0f}/s")
print(f"R1 book-spread/ping   = {spread:.0f}/{ping:.0f} = {spread/ping:.2f} (goal >= 0.6)")
print(f"R2 redis us/booking   = {per_booking:.2f}/{per_bare:.2f} = {per_booking/per_bare:.2f} (goal <= 2.0)")
hot = r["book-hot"]["throughput_per_sec"]
print(f"R3 book-hot/spread    = {hot:.0f}/{r['book-spread']['throughput_per_sec']:.0f} = {hot/r['book-spread']['throughput_per_sec']:.2f} (goal >= 0.9)")
cal = r["calendar"]["throughput_per_sec"]
print(f"R4 calendar/ping      = {cal:.0f}/{ping:.0f} = {cal/ping:.2f} (goal >= 0.8)")
h = r["book-spread-half"]
print(f"book-spread at {h['rate']:.0f}/s (half of max, open loop): p50 {h['latency_us']['p50']} us, p99 {h['latency_us']['p99']} us, achieved {h['ok_per_sec']:.0f}/s")
w = r["watch"]
print(f"watch: {w['watch_streams_open']} streams, RSS {w['server_rss_kib_before']} KiB before, {w['server_rss_kib_peak']} KiB peak")
print("redis-benchmark:", open(f"{out}/redis-benchmark.txt").read().strip())
PY
echo "raw reports in $OUT"
