#!/usr/bin/env bash
# Per-call costs for deploy/DEPLOYMENT.md (Capacity planning): a throwaway redis-server, one
# release slotd on it, then `calendar` and `book-spread` runs, reading slotd's CPU time from
# /proc/PID/stat and Redis' INFO commandstats / INFO memory around each. Loopback only.
#   benches/costs.sh [concurrency] [connections] [seconds]
# Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
C=${1:-64}; N=${2:-4}; D=${3:-10}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
OUT=${OUT:-$(mktemp -d)}
read -r RP SP < <(python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
WORK=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SLOTD_ADMIN_TOKEN="measure-admin-token-$RANDOM$RANDOM"
# Required with Redis (tickets and tokens outlive the process); >= 32 characters.
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$SP" --redis-url "redis://127.0.0.1:$RP/" \
  >"$WORK/slotd.log" 2>&1 &
SLOTD_PID=$!; pids+=($SLOTD_PID)
for _ in $(seq 100); do "$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario ping --requests 1 \
  --concurrency 1 --connections 1 >/dev/null 2>&1 && break; sleep 0.2; done
cpu() { awk '{print $14 + $15}' "/proc/$SLOTD_PID/stat"; }  # utime + stime, clock ticks
run() { local name=$1; shift
  "$BIN/slotd-load" --target "127.0.0.1:$SP" "$@" --setup-only >/dev/null
  redis-cli -p "$RP" config resetstat >/dev/null
  redis-cli -p "$RP" info memory | grep '^used_memory:' | cut -d: -f2 | tr -d '\r' >"$OUT/$name.mem0"
  cpu >"$OUT/$name.cpu0"
  "$BIN/slotd-load" --target "127.0.0.1:$SP" "$@" --skip-setup --concurrency "$C" --connections "$N" \
    --duration "$D" --json >"$OUT/$name.json"
  cpu >"$OUT/$name.cpu1"
  redis-cli -p "$RP" info memory | grep '^used_memory:' | cut -d: -f2 | tr -d '\r' >"$OUT/$name.mem1"
  redis-cli -p "$RP" info commandstats >"$OUT/$name.cmdstats"
}
run calendar --scenario calendar --run-id 8181
run book-spread --scenario book-spread --run-id 8282 --applicants 60000
python3 - "$OUT" "$(getconf CLK_TCK)" <<'PY'
import json, re, sys
out, tck = sys.argv[1], int(sys.argv[2])
def stats(name):
    s = {}
    for line in open(f"{out}/{name}.cmdstats"):
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+),", line)
        if m: s[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return s
for name in ["calendar", "book-spread"]:
    r = json.load(open(f"{out}/{name}.json"))
    calls = r["requests"] if name == "calendar" else max(r["bookings_confirmed"], 1)
    cpu = (float(open(f"{out}/{name}.cpu1").read()) - float(open(f"{out}/{name}.cpu0").read())) / tck
    mem = int(open(f"{out}/{name}.mem1").read()) - int(open(f"{out}/{name}.mem0").read())
    s = stats(name)
    # What slotd sends itself (a function's own commands are inside its FCALL usec).
    redis_us = sum(s.get(c, (0, 0))[1] for c in ["fcall", "evalsha", "hgetall", "xrange", "xrevrange", "exists"])
    print(f"{name}: {calls} calls in {r['seconds']:.1f} s ({r['throughput_per_sec']:.0f}/s); "
          f"slotd CPU {cpu * 1e6 / calls:.1f} us/call; Redis CPU (FCALL, HGETALL, XRANGE, EXISTS) {redis_us / calls:.2f} us/call; "
          f"used_memory +{mem / calls:.0f} B/call")
    for cmd, (c, u) in sorted(s.items(), key=lambda kv: -kv[1][1])[:6]:
        print(f"    {cmd:16} {c:8} calls {u / max(c, 1):8.2f} us/call {c / calls:8.4f} per {name} call")
PY
echo "raw reports in $OUT"
