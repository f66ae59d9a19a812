#!/usr/bin/env bash
# slotd's instructions per booking (benches/README.md §20): a release slotd runs under
# `valgrind --tool=callgrind` on a throwaway Redis (no persistence); after the setup (slots,
# receipts: not counted) the counters are zeroed, slotd-load sends a fixed number of pings, then
# of book-spread bookings, and callgrind dumps the counters after each phase. Instructions
# (Ir) count the same on a loaded machine. slotd-load audits what it opened after every run, so
# a run of one booking (the audit and one booking) is subtracted: Ir per booking = (Ir of B
# bookings − Ir of 1) / (B − 1). An idle phase as long as the ping phase shows the background
# work (sweepers, ticks) that every phase carries.
#   benches/book-callgrind.sh [bookings] [concurrency] [connections]
# SERVER (default target/release/slotd). Prints Ir per ping and per confirmed booking and
# leaves the dumps in $OUT for `callgrind_annotate $OUT/book.out`. Loopback only.
# Needs: valgrind, cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=${1:-2000}; C=${2:-8}; N=${3:-2}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
SERVER=${SERVER:-$BIN/slotd}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_redis; SP=$(free_port)
valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$OUT/callgrind.%p.out" \
  "$SERVER" serve --config benches/load.toml --listen "127.0.0.1:$SP" \
  --redis-url "redis://127.0.0.1:$RP/" >"$WORK/slotd.log" 2>&1 &
VPID=$!; pids+=($VPID)
wait_healthy "$SP" "$WORK/slotd.log" 300 0.5
SPREAD=(--scenario book-spread --applicants "$B" --run-id 202020)
"$BIN/slotd-load" --target "127.0.0.1:$SP" "${SPREAD[@]}" --setup-only >/dev/null
ONE=(--scenario book-spread --applicants 1 --run-id 202021)
"$BIN/slotd-load" --target "127.0.0.1:$SP" "${ONE[@]}" --setup-only >/dev/null
phase() { # name, then the command of the phase
  local name=$1; shift
  callgrind_control --zero "$VPID" >/dev/null 2>&1
  "$@"
  callgrind_control --dump="$name" "$VPID" >/dev/null 2>&1
  sleep 1
  local f; f=$(ls -t "$OUT"/callgrind.*.out.* | head -n 1)
  mv "$f" "$OUT/$name.out"
}
start=$(date +%s.%N)
phase ping "$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario ping --requests "$B" \
  --concurrency "$C" --connections "$N" --duration 600 --json >"$OUT/ping.json"
ping_secs=$(python3 -c "import time; print(time.time() - $start)")
phase book "$BIN/slotd-load" --target "127.0.0.1:$SP" "${SPREAD[@]}" --skip-setup --requests "$B" \
  --concurrency "$C" --connections "$N" --duration 600 --json >"$OUT/book.json"
phase one "$BIN/slotd-load" --target "127.0.0.1:$SP" "${ONE[@]}" --skip-setup --requests 1 \
  --concurrency 1 --connections 1 --duration 600 --json >"$OUT/one.json"
phase idle sleep "${ping_secs%.*}"
total() { sed -n 's/^summary: \([0-9]*\).*/\1/p;s/^totals: \([0-9]*\).*/\1/p' "$1" | head -n 1; }
python3 - "$OUT" "$(total "$OUT/ping.out")" "$(total "$OUT/book.out")" "$(total "$OUT/idle.out")" "$ping_secs" "$(total "$OUT/one.out")" <<'PY'
import json, sys
out, ping_ir, book_ir, idle_ir, ping_secs, one_ir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
p, b, o = (json.load(open(f"{out}/{n}.json")) for n in ("ping", "book", "one"))
booked = max(b["bookings_confirmed"], 1)
print(f"ping: {p['requests']} requests, {ping_ir:,} Ir, {ping_ir / max(p['requests'], 1):,.0f} Ir per ping")
print(f"book-spread: {b['requests']} requests, {booked} confirmed (passed {b['passed']}), {book_ir:,} Ir; one booking and the audit: {one_ir:,} Ir (confirmed {o['bookings_confirmed']})")
print(f"Ir per confirmed booking: ({book_ir:,} - {one_ir:,}) / {booked - 1} = {(book_ir - one_ir) / max(booked - 1, 1):,.0f}")
print(f"idle for {ping_secs:.1f} s (the ping phase's length): {idle_ir:,} Ir ({idle_ir / max(p['requests'], 1):,.0f} per ping of that phase)")
PY
echo "profiles: callgrind_annotate $OUT/book.out"
