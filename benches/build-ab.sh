#!/usr/bin/env bash
# Two slotd builds A/B, in one run: one throwaway redis-server, slotd binary A and binary B on
# it, then ping, book-spread and calendar against A, B, A, B, so both see the same machine load
# (e.g. the release profile against release-fat). Loopback only.
#   A=path/to/slotd B=path/to/other/slotd benches/build-ab.sh [concurrency] [connections] [seconds]
# Needs: cargo build --release --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
C=${1:-64}; N=${2:-4}; D=${3:-10}
A=${A:?set A=<slotd binary>}; B=${B:?set B=<slotd binary>}
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
"$A" serve --config benches/load.toml \
  --listen "127.0.0.1:$PA" --redis-url "redis://127.0.0.1:$RP/" >"$WORK/a.log" 2>&1 &
pids+=($!)
"$B" serve --config benches/load.toml --listen "127.0.0.1:$PB" \
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
for round in 1 2; do
  for side in a b; do
    port=$PA; [ "$side" = b ] && port=$PB
    load "ping-$side$round" "$port" --scenario ping
    load "book-spread-$side$round" "$port" --scenario book-spread --applicants 50000 --run-id "$RANDOM$round"
    load "calendar-$side$round" "$port" --scenario calendar --run-id "$RANDOM$round"
  done
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
t = lambda n: json.load(open(f"{out}/{n}.json"))["throughput_per_sec"]
for sc in ["ping", "book-spread", "calendar"]:
    a = (t(f"{sc}-a1") + t(f"{sc}-a2")) / 2
    b = (t(f"{sc}-b1") + t(f"{sc}-b2")) / 2
    print(f"{sc:12} A {a:8.0f}/s  B {b:8.0f}/s  B/A {b/a:.2f}")
for s in "ab":
    p = (t(f"ping-{s}1") + t(f"ping-{s}2")) / 2
    print(f"{s.upper()}: R1 {(t(f'book-spread-{s}1') + t(f'book-spread-{s}2')) / 2 / p:.2f}  R4 {(t(f'calendar-{s}1') + t(f'calendar-{s}2')) / 2 / p:.2f}")
PY
echo "raw reports in $OUT"
