#!/usr/bin/env bash
# Redis CPU per join: room_lib.lua + room_join.lua (as one EVALSHA script, after the generated
# constants of `slotd redis library`) on a throwaway redis-server, driven by
# redis-benchmark (fresh client keys and ticket ids per call), read from INFO commandstats and
# INFO cpu. B joins per script call (a replica's batch; default 1).
#   benches/room-join.sh [joins N] [batch B]
# LIB= and JOIN= name other room_lib.lua / room_join.lua files (e.g. an older commit's, from
# `git show`) to compare scripts; the ARGV shape of one join (now, client key, fresh id) is the
# same as before batching.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}; B=${2:-1}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no >"$DIR/log" 2>&1 &
PID=$!
trap 'kill $PID; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
P='slotd:{b-room}:room:'
KEYS="${P}config ${P}state ${P}waiting ${P}seen ${P}active ${P}admits ${P}tickets ${P}clients ${P}ended ${P}log"
LIB=${LIB:-src/store/redis/lua/room_lib.lua}; JOIN=${JOIN:-src/store/redis/lua/room_join.lua}
# The constants slotd's functions library defines from Rust (RATE_WINDOW_MS, ROOM_DEFAULT_*...),
# then the two files as one EVAL script: a standalone measure of the Lua, older files included.
SLOTD=${SLOTD:-target/release/slotd}
[ -x "$SLOTD" ] || SLOTD=target/debug/slotd
SHA=$(cat <("$SLOTD" redis library | grep -E '^local [A-Z_]+ = ') "$LIB" <(echo) "$JOIN" | redis-cli -p "$PORT" -x script load)
redis-cli -p "$PORT" hset "${P}config" enabled 1 rate 600 cap 1000 session 600 timeout 60 paused 0 gate 0 >/dev/null
cpu() { redis-cli -p "$PORT" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }'; }
ARGS=()
for i in $(seq "$B"); do
  ARGS+=("ck-$i-__rand_int__-Kq7xZ2pLm9TvW4rN8sYb3cKq7xZ2pLm9TvW4" "00000000000000000000$(printf %02d $((i % 100)))__rand_int__")
done
redis-cli -p "$PORT" config resetstat >/dev/null
cpu0=$(cpu)
redis-benchmark -p "$PORT" -n "$((N / B))" -c 8 -r 100000000 -q \
  EVALSHA "$SHA" 10 $KEYS 1900000000000 "${ARGS[@]}" >/dev/null
cpu1=$(cpu)
redis-cli -p "$PORT" info commandstats | grep -E "cmdstat_"
waiting=$(redis-cli -p "$PORT" zcard "${P}waiting")
usec=$(redis-cli -p "$PORT" info commandstats | tr -d '\r' | awk -F'[:=,]' '$1 == "cmdstat_evalsha" { print $5 }')
python3 -c "import sys; w, u, c = int(sys.argv[1]), int(sys.argv[2]), (float(sys.argv[4]) - float(sys.argv[3])) * 1e6
print(f'waiting: {w}; batch {sys.argv[5]}: Redis us per join {u / w:.2f} (script usec), {c / w:.2f} (Redis CPU, INFO cpu)')" \
  "$waiting" "$usec" "$cpu0" "$cpu1" "$B"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
