#!/usr/bin/env bash
# CI load test (issue 7): slotd on a throwaway Redis, then short book-hot and mixed runs of
# slotd-load, and a small flash crowd through the waiting room over two replicas (issue 14). It fails only on correctness (overbooking, an audit violation, an unexpected error
# code: slotd-load exits non-zero), never on speed: this machine is shared and debug-built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# `--tests`: dependencies get the features `cargo test` gave them (dev-dependencies unify
# features only in builds that include tests), so after CI's test step this builds nothing;
# `cargo build --bin slotd` alone would recompile a third of the dependency tree.
cargo build --tests --bin slotd --bin slotd-load
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

# Three distinct free ports at once (separate probes could return the same port twice).
free_ports() { python3 -c 'import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))'; }
WORK=$(mktemp -d)
read -r REDIS_PORT SLOTD_PORT SLOTD_PORT_B < <(free_ports)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --save '' \
  --appendonly yes --appendfsync always --maxmemory-policy noeviction >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

export SLOTD_ADMIN_TOKEN="ci-load-admin-token-$RANDOM$RANDOM"
# Required with Redis (tickets and tokens outlive the process); >= 32 characters.
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$SLOTD_PORT" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT/" >"$WORK/slotd.log" 2>&1 &
pids+=($!)
ready=0
for _ in $(seq 100); do
  if "$BIN/slotd-load" --target "127.0.0.1:$SLOTD_PORT" --scenario ping --requests 1 --connections 1 \
      --concurrency 1 >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
if [ "$ready" != 1 ]; then
  echo "slotd did not become healthy"; cat "$WORK/slotd.log"; exit 1
fi

run() {
  echo "+ slotd-load $*"
  if ! "$BIN/slotd-load" --target "127.0.0.1:$SLOTD_PORT" "$@"; then
    echo "slotd-load failed (correctness); slotd log tail:"; tail -n 50 "$WORK/slotd.log"
    exit 1
  fi
}
run --scenario book-hot --duration 15 --concurrency 64 --connections 4 --hot-seats 300 --applicants 2000
run --scenario mixed --duration 15 --concurrency 64 --connections 4 --applicants 3000

# A second replica on the same Redis for the crowd: 300 clients join in a burst over both, each
# watching; the room admits 100/s; the admitted hold and book a 120-seat hot slot; 10 % abandon.
slotd_a=${pids[1]}
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$SLOTD_PORT_B" \
  --redis-url "redis://127.0.0.1:$REDIS_PORT/" >"$WORK/slotd-b.log" 2>&1 &
pids+=($!)
slotd_b=$!
for _ in $(seq 100); do
  "$BIN/slotd-load" --target "127.0.0.1:$SLOTD_PORT_B" --scenario ping --requests 1 \
    --connections 1 --concurrency 1 >/dev/null 2>&1 && break
  sleep 0.2
done
run --scenario crowd --addr "127.0.0.1:$SLOTD_PORT" --addr "127.0.0.1:$SLOTD_PORT_B" \
  --concurrency 300 --applicants 300 --rate 100 --hot-seats 120 --days 1 --abandon 0.1 \
  --duration 60 --redis-url "redis://127.0.0.1:$REDIS_PORT/" \
  --server-pid "$slotd_a" --server-pid "$slotd_b"
echo "load test: correct under load"
