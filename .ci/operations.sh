#!/usr/bin/env bash
# Runs the operator guide (deploy/OPERATIONS.md) against a real slotd on a real Redis: starts a
# throwaway redis-server and slotd on free loopback ports, executes every command between the
# guide's ci:ops markers with `bash -euo pipefail`, and checks the key answers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
slotd_port=$(free_port)
metrics_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --save '' \
  --appendonly yes --appendfsync always --maxmemory-policy noeviction >"$work/redis.log" 2>&1 &
redis_pid=$!
slotd_pid=
cleanup() {
  [ -n "$slotd_pid" ] && kill "$slotd_pid" 2>/dev/null || true
  kill "$redis_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping

# `--tests`: dependencies get the features `cargo test` gave them (dev-dependencies unify
# features only in builds that include tests), so after CI's test step this builds nothing;
# `cargo build --bin slotd` alone would recompile a third of the dependency tree.
cargo build --quiet --tests --bin slotd
BIN="${CARGO_TARGET_DIR:-target}/debug/slotd"
# The shipped example configuration is valid.
"$BIN" config check deploy/slotd.example.toml >/dev/null

export SLOTD_ADMIN_TOKEN=ops-guide-token-change-me-0123
# Required with Redis (tickets and tokens outlive the process); >= 32 characters.
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
SLOTD__REDIS__URL="redis://127.0.0.1:$redis_port/0" \
  "$BIN" serve --config deploy/slotd.example.toml \
  --listen "127.0.0.1:$slotd_port" --metrics-listen "127.0.0.1:$metrics_port" \
  >"$work/slotd.log" 2>&1 &
slotd_pid=$!
for _ in $(seq 1 100); do
  grep -q "slotd listening" "$work/slotd.log" && break
  sleep 0.1
done
grep -q "slotd listening" "$work/slotd.log" || { cat "$work/slotd.log"; echo "slotd did not start" >&2; exit 1; }
grep -q "redis store answers" "$work/slotd.log" || { cat "$work/slotd.log"; echo "slotd is not on redis" >&2; exit 1; }

out="$work/out"
# The runbook's `slotd config check` steps run this build.
PATH="$(cd "$(dirname "$BIN")" && pwd):$PATH"
export PATH
script="$work/guide.sh"
python3 .ci/readme.py blocks deploy/OPERATIONS.md ops >"$script"
ADDR="127.0.0.1:$slotd_port" OUT="$out" CONFIG=deploy/slotd.example.toml bash -euxo pipefail "$script"

# The guide's answers, checked.
check() { grep -q "$2" "$out/$1" || { echo "--- $out/$1:"; cat "$out/$1"; echo "expected $2 in $1" >&2; exit 1; }; }
check health.json '"status": "SERVING"'
check open.json '"slotsOpened": '
check receipt.json '"created": true'
check booked.json '"status": "APPOINTMENT_STATUS_BOOKED"'
check capacity.json '"capacity": 40'
check slot.json '"capacity": 40'
check slot.json '"booked": 1'
check closed.json '"slotsClosed": 16'
check events.json '"type": "booked"'
check manifest.json '"passportNumber": "E87654321"'
check audit.json '"slotsChecked": '
if grep -q '"violations"' "$out/audit.json"; then echo "audit found violations" >&2; exit 1; fi
check room-on.json '"enabled": true'
check room-stats.json '"config"'
if grep -q '"enabled": true' "$out/room-off.json"; then echo "room still on" >&2; exit 1; fi
if grep -q '"time"' "$out/holiday-slots.json"; then echo "holiday still bookable" >&2; exit 1; fi
check rotate-learn.toml 'previous_admission_keys = \["<redacted>"\]'
check rotate-swap.toml 'previous_admission_keys = \["<redacted>"\]'
check rotate-retire.toml 'previous_admission_keys = \[\]'
check rotate-mistake.txt 'server.previous_admission_keys\[0\]'

# The metrics the guide lists are served.
metrics=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics').read().decode())")
for name in slotd_rpc_requests_total slotd_bookings_total slotd_redis_duration_seconds; do
  grep -q "^$name" <<<"$metrics" || { echo "metric $name missing" >&2; exit 1; }
done

kill -TERM "$slotd_pid"
wait "$slotd_pid" || { cat "$work/slotd.log"; echo "slotd did not stop cleanly" >&2; exit 1; }
slotd_pid=
grep -q "slotd stopped" "$work/slotd.log"
echo "operator guide passed"
