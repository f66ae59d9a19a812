#!/usr/bin/env bash
# HTTP/2 settings A/B in one run: one throwaway redis-server, two release slotd
# on it (A: the defaults, h2 64 KiB windows; B: server.http2_window_kib = 1024 and
# server.http2_adaptive_window = true), then ping and book-spread against each, interleaved, so
# both see the same machine load. Loopback only.
#   benches/h2-ab.sh [concurrency] [connections] [seconds]
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
"$BIN/slotd" serve --config benches/load.toml \
  --listen "127.0.0.1:$PA" --redis-url "redis://127.0.0.1:$RP/" >"$WORK/a.log" 2>&1 &
pids+=($!)
SLOTD__SERVER__HTTP2_WINDOW_KIB=1024 SLOTD__SERVER__HTTP2_ADAPTIVE_WINDOW=true "$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$PB" \
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
# Each book-spread run has its own run id (own applicants); its setup is not timed.
load ping-a "$PA" --scenario ping
load book-a "$PA" --scenario book-spread --run-id 7171
load ping-b "$PB" --scenario ping
load book-b "$PB" --scenario book-spread --run-id 7172
load ping-a2 "$PA" --scenario ping
load book-a2 "$PA" --scenario book-spread --run-id 7173
load ping-b2 "$PB" --scenario ping
load book-b2 "$PB" --scenario book-spread --run-id 7174
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
t = lambda n: json.load(open(f"{out}/{n}.json"))["throughput_per_sec"]
p99 = lambda n: json.load(open(f"{out}/{n}.json"))["latency_us"]["p99"]
r = {}
for label, s in [("h2 defaults (A)", "a"), ("1 MiB + adaptive (B)", "b")]:
    ping = (t(f"ping-{s}") + t(f"ping-{s}2")) / 2
    book = (t(f"book-{s}") + t(f"book-{s}2")) / 2
    r[s] = (ping, book)
    print(f"{label:22} ping {ping:8.0f}/s  book-spread {book:7.0f}/s  (p99 ping {p99(f'ping-{s}2')} us, book {p99(f'book-{s}2')} us)")
print(f"B / A: ping {r['b'][0] / r['a'][0]:.2f}, book-spread {r['b'][1] / r['a'][1]:.2f}")
PY
