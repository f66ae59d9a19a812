#!/usr/bin/env bash
# Steady-state cost of open waiting-room Watch streams (#14): a throwaway redis-server, one
# release slotd on it, the room on and paused (nobody admitted: what W idle waiters cost), then
# `slotd-load --scenario watch` with W streams for WARM + D seconds. Opening the streams (W
# joins and W status reads) happens in the first seconds and is left out: Redis INFO
# commandstats is reset and slotd's CPU (/proc/PID/stat) read after WARM seconds, and read
# again D seconds later. A run with one stream gives the replica's own cost (settings read and
# admission step, 10 a second), which is subtracted.
# Prints: Redis µs per waiter-second, slotd CPU µs per waiter-second, slotd RSS per stream.
# Loopback only.   benches/room-watch-steady.sh [streams W] [seconds D] [warm-up WARM]
# Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
W=${1:-2000}; D=${2:-40}; WARM=${3:-15}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
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
cpu() { awk '{print $14 + $15}' "/proc/$SLOTD_PID/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$SLOTD_PID/status"; }
usec() { redis-cli -p "$RP" info commandstats | python3 -c 'import re, sys
print(sum(int(m.group(2)) for m in (re.match(r"cmdstat_([^:]+):calls=\d+,usec=(\d+),", l) for l in sys.stdin)
          if m and m.group(1) in ("fcall", "evalsha", "hgetall")))'; }
measure() { local name=$1 streams=$2
  local rss0; rss0=$(rss)
  "$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario watch --concurrency "$streams" \
    --connections "${CONN:-16}" --duration $((WARM + D)) --json >"$WORK/$name.json" &
  local load=$!
  sleep "$WARM"
  redis-cli -p "$RP" config resetstat >/dev/null
  local c0; c0=$(cpu)
  sleep "$D"
  local r1 c1 rss1; r1=$(usec); c1=$(cpu); rss1=$(rss)
  wait "$load"
  echo "$name $streams $r1 $((c1 - c0)) $rss0 $rss1"
}
one=$(measure watch-1 1)
many=$(measure watch-W "$W")
python3 - "$one" "$many" "$D" "$(getconf CLK_TCK)" "$WORK/watch-W.json" <<'PY'
import json, sys
one, many, d, tck, report = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = json.load(open(report))
w = r["watch_streams_open"]
redis1, redisw = int(one[2]) / d, int(many[2]) / d          # µs of Redis per second
cpu1, cpuw = int(one[3]) / tck / d, int(many[3]) / tck / d   # s of slotd CPU per second
print(f"W = {w} open streams, steady window {d} s")
print(f"  Redis : {redisw:.0f} us/s with W streams, {redis1:.0f} us/s with one -> "
      f"{(redisw - redis1) / w:.4f} us per waiter-second ({redisw / w:.4f} with the replica's own steps)")
print(f"  slotd : {cpuw * 1e6:.0f} us/s with W streams, {cpu1 * 1e6:.0f} us/s with one -> "
      f"{(cpuw - cpu1) * 1e6 / w:.2f} us CPU per waiter-second")
print(f"  RSS   : {many[4]} -> {many[5]} KiB -> {(int(many[5]) - int(many[4])) / w:.2f} KiB per stream")
print(f"  msgs  : {r['watch_messages']} in {r['seconds']:.0f} s -> {r['watch_messages'] / w / r['seconds']:.3f} per waiter-second (heartbeats; the room is paused)")
PY
