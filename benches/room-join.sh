#!/usr/bin/env bash
# Redis CPU per join: room_lib.lua + room_join.lua on a throwaway redis-server, driven by
# redis-benchmark (fresh client key and ticket id per call), read from INFO commandstats.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no >"$DIR/log" 2>&1 &
PID=$!
trap 'kill $PID; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
P='slotd:{b-room}:room:'
KEYS="${P}config ${P}state ${P}waiting ${P}seen ${P}active ${P}admits ${P}tickets ${P}clients ${P}ended ${P}log"
SHA=$(cat src/store/redis/lua/room_lib.lua <(echo) src/store/redis/lua/room_join.lua | redis-cli -p "$PORT" -x script load)
redis-cli -p "$PORT" hset "${P}config" enabled 1 rate 600 cap 1000 session 600 timeout 60 paused 0 gate 0 >/dev/null
redis-cli -p "$PORT" config resetstat >/dev/null
redis-benchmark -p "$PORT" -n "$N" -c 8 -r 100000000 -q \
  EVALSHA "$SHA" 10 $KEYS 1900000000000 "ck-__rand_int__-Kq7xZ2pLm9TvW4rN8sYb3cKq7xZ2pLm9TvW4" "000000000000000000000__rand_int__" >/dev/null
redis-cli -p "$PORT" info commandstats | grep -E "cmdstat_"
echo "waiting: $(redis-cli -p "$PORT" zcard "${P}waiting")"
