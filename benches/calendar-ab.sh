#!/usr/bin/env bash
# R4 before/after the calendar cache, in one run: one throwaway redis-server, two release slotd
# on it (A: calendar.cache_max_age_ms = 0, i.e. every call reads Redis as before the cache;
# B: the defaults), then ping and calendar against each, interleaved, so both ratios see the
# same machine load. Loopback only.
#   benches/calendar-ab.sh [concurrency] [connections] [seconds]
# Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
C=${1:-64}; N=${2:-4}; D=${3:-10}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
OUT=${OUT:-$(mktemp -d)}
ports() { python3 -c 'import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'; }
WORK=$(mktemp -d); read -r RP PA PB < <(ports)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SLOTD_ADMIN_TOKEN="measure-admin-token-$RANDOM$RANDOM"
# Required with Redis (tickets and tokens outlive the process); >= 32 characters.
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
SLOTD__CALENDAR__CACHE_MAX_AGE_MS=0 "$BIN/slotd" serve --config benches/load.toml \
  --listen "127.0.0.1:$PA" --redis-url "redis://127.0.0.1:$RP/" >"$WORK/a.log" 2>&1 &
pids+=($!)
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$PB" \
  --redis-url "redis://127.0.0.1:$RP/" >"$WORK/b.log" 2>&1 &
pids+=($!)
for p in "$PA" "$PB"; do
  ready=0
  for _ in $(seq 100); do "$BIN/slotd-load" --target "127.0.0.1:$p" --scenario ping --requests 1 \
    --concurrency 1 --connections 1 >/dev/null 2>&1 && { ready=1; break; }; sleep 0.2; done
  [ "$ready" = 1 ] || { echo "slotd on $p did not become healthy"; cat "$WORK"/*.log; exit 1; }
done
load() { local name=$1 port=$2; shift 2
  "$BIN/slotd-load" --target "127.0.0.1:$port" --concurrency "$C" --connections "$N" --duration "$D" \
    --json "$@" >"$OUT/$name.json"
  python3 -c "import json; r=json.load(open('$OUT/$name.json')); print('%-14s %9.0f req/s  p50 %6d us  p99 %6d us  passed %s' % ('$name', r['throughput_per_sec'], r['latency_us']['p50'], r['latency_us']['p99'], r['passed']))"
}
# The same --run-id: B lists the days A opened (one inventory, two replicas).
load ping-a "$PA" --scenario ping
load calendar-a "$PA" --scenario calendar --run-id 7070
load ping-b "$PB" --scenario ping
load calendar-b "$PB" --scenario calendar --run-id 7070 --skip-setup
load ping-a2 "$PA" --scenario ping
load calendar-a2 "$PA" --scenario calendar --run-id 7070 --skip-setup
load ping-b2 "$PB" --scenario ping
load calendar-b2 "$PB" --scenario calendar --run-id 7070 --skip-setup
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
t = lambda n: json.load(open(f"{out}/{n}.json"))["throughput_per_sec"]
for label, s in [("no cache (A)", "a"), ("cache (B)", "b")]:
    ping = (t(f"ping-{s}") + t(f"ping-{s}2")) / 2
    cal = (t(f"calendar-{s}") + t(f"calendar-{s}2")) / 2
    print(f"R4 {label:13} calendar/ping = {cal:.0f}/{ping:.0f} = {cal/ping:.2f} (goal >= 0.8)")
PY
echo "raw reports in $OUT"
