#!/usr/bin/env bash
# Redis CPU per join through slotd (issue 14 item 3): a throwaway redis-server (no AOF), one slotd
# replica on it, then `slotd-load --scenario join` (room enabled and paused: the line grows as in a
# burst, no admission competes) with N fresh client keys from C concurrent callers. Redis
# `INFO commandstats` is reset just before the burst and read just after: the scripts' total usec
# (FCALL; the replica's ticks during the burst included, ~1-2 ms a second) divided by the joins
# answered is the unit, "Redis µs per join", whatever the number of script calls; calls per join
# shows the batching. Loopback only.
#   benches/room-join-burst.sh [joins N] [concurrency C] [connections]
# Needs: cargo build [--release] --bin slotd --bin slotd-load (BIN= the directory, default
# target/release); redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${1:-20000}; C=${2:-500}; CONN=${3:-16}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
WORK=$(mktemp -d)
read -r RP PA < <(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly no \
  --maxmemory-policy noeviction >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SLOTD_ADMIN_TOKEN="join-admin-token-$RANDOM$RANDOM"
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$PA" \
  --redis-url "redis://127.0.0.1:$RP/" >"$WORK/a.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  "$BIN/slotd-load" --target "127.0.0.1:$PA" --scenario ping --requests 1 --connections 1 \
    --concurrency 1 >/dev/null 2>&1 && break
  sleep 0.2
done
stat() { redis-cli -p "$RP" info commandstats | tr -d '\r' | awk -F'[:=,]' -v c="cmdstat_$1" '$1 == c { print $3, $5 }'; }
cpu() { redis-cli -p "$RP" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }'; }
redis-cli -p "$RP" config resetstat >/dev/null
cpu0=$(cpu)
echo "+ slotd-load --scenario join --requests $N --concurrency $C --connections $CONN (load: $(cut -d' ' -f1-3 /proc/loadavg))"
# slotd-load exits non-zero on any unexpected outcome (e.g. UNAVAILABLE): still report.
"$BIN/slotd-load" --target "127.0.0.1:$PA" --scenario join --requests "$N" --concurrency "$C" \
  --connections "$CONN" --duration 300 || echo "slotd-load: exit $?"
cpu1=$(cpu)
redis-cli -p "$RP" info commandstats | tr -d "\r" | grep -E "^cmdstat_(fcall|evalsha|zadd|hset|hmget|hget|hincrby|zcard|zcount|hgetall|zrangebyscore)[:]"
# slotd calls its functions library with FCALL (EVALSHA before #16).
read -r calls usec < <(stat fcall) || read -r calls usec < <(stat evalsha)
joined=$(redis-cli -p "$RP" hget 'slotd:{slotd-room}:room:state' last_number)
python3 - "$calls" "$usec" "$joined" "$cpu0" "$cpu1" <<'PY'
import sys
calls, usec, joined = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3] or 0)
cpu = (float(sys.argv[5]) - float(sys.argv[4])) * 1e6
j = max(joined, 1)
print(f"joins (tickets numbered): {joined}; script calls: {calls} ({calls / j:.3f} per join)")
print(f"Redis us per join: {usec / j:.2f} (scripts' usec, commandstats: wall time inside Redis, "
      f"inflated when the machine is loaded); {cpu / j:.2f} (Redis CPU, INFO cpu user+sys, "
      f"everything Redis did: network, parsing, scripts)")
PY
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
