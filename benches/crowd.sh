#!/usr/bin/env bash
# A flash crowd through the waiting room (issue 14): a throwaway redis-server (no AOF unless
# AOF=always), two release slotd replicas on it, then `slotd-load --scenario crowd`:
# N clients join the paused room in a burst over both replicas, each holding a Watch stream; the
# room admits RATE per second; the admitted hold and book a HOT-seat slot; 10 % abandon mid-wait.
# Reports Redis CPU (INFO cpu) and slotd CPU and RSS (/proc) per waiter-second and per stream,
# messages per waiter-second, join throughput; fails on an inversion, a rate-bound violation or
# an overbooking. Loopback only.
#   benches/crowd.sh [clients N] [rate RATE] [hot seats HOT] [max seconds D] [slotd-load args...]
# Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
N=${1:-2000}; RATE=${2:-50}; HOT=${3:-500}; D=${4:-120}
shift $(( $# < 4 ? $# : 4 ))
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
WORK=$(mktemp -d)
read -r RP PA PB < <(python3 -c 'import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# AOF=always is deploy/redis.conf's durability (every write fsynced); the default `no` measures
# CPU without the disk, like benches/room-costs.sh.
case "${AOF:-no}" in
  always) aof=(--appendonly yes --appendfsync always) ;;
  *) aof=(--appendonly no) ;;
esac
# SLOWLOG=1 records every command of the waiting phase (slotd-load resets the log at the
# unpause) and prints each script's share after the run (benches/slowlog-shares.py); the logging
# itself costs Redis CPU, so measure without it.
slow=()
[ "${SLOWLOG:-0}" = 1 ] && slow=(--slowlog-log-slower-than 0 --slowlog-max-len 2000000)
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save '' "${aof[@]}" "${slow[@]}" \
  --maxmemory-policy noeviction >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SLOTD_ADMIN_TOKEN="crowd-admin-token-$RANDOM$RANDOM"
# Required with Redis (tickets and tokens outlive the process); >= 32 characters.
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$PA" \
  --redis-url "redis://127.0.0.1:$RP/" >"$WORK/a.log" 2>&1 &
pids+=($!); A=$!
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$PB" \
  --redis-url "redis://127.0.0.1:$RP/" >"$WORK/b.log" 2>&1 &
pids+=($!); B=$!
for p in "$PA" "$PB"; do
  for _ in $(seq 100); do
    "$BIN/slotd-load" --target "127.0.0.1:$p" --scenario ping --requests 1 --connections 1 \
      --concurrency 1 >/dev/null 2>&1 && break
    sleep 0.2
  done
done
echo "+ slotd-load --scenario crowd --concurrency $N --rate $RATE --hot-seats $HOT --duration $D $* (load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$BIN/slotd-load" --target "127.0.0.1:$PA" --scenario crowd \
  --addr "127.0.0.1:$PA" --addr "127.0.0.1:$PB" \
  --concurrency "$N" --applicants "$N" --rate "$RATE" --hot-seats "$HOT" --days 1 \
  --duration "$D" --redis-url "redis://127.0.0.1:$RP/" --server-pid "$A" --server-pid "$B" "$@" \
  || { rc=$?; echo "slotd-load failed; slotd logs:"; tail -n 20 "$WORK/a.log" "$WORK/b.log"; exit $rc; }
[ "${SLOWLOG:-0}" = 1 ] && python3 benches/slowlog-shares.py "$RP"
# Join / status batches a replica sent once more after an UNAVAILABLE answer (src/room.rs).
echo "batches sent again after UNAVAILABLE: a $(grep -c 'sent once more' "$WORK/a.log" || true), b $(grep -c 'sent once more' "$WORK/b.log" || true)"
echo "load: $(cut -d" " -f1-3 /proc/loadavg)"
