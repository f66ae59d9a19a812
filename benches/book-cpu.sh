#!/usr/bin/env bash
# slotd's own CPU per booking, book-spread ÷ ping and the p99 at half the booking throughput
# (benches/README.md §20, §24), for one or two slotd builds interleaved on one throwaway Redis (no
# persistence): for each round and each build, `ping` (closed loop), `book-spread` (closed loop:
# the maximum booking throughput) and `book-spread` open loop at half of that round's maximum.
# slotd CPU comes from /proc of the server (`--server-pid`), Redis µs per booking from
# `cmdstat_fcall` (`--redis-url`). Loopback only.
#   benches/book-cpu.sh [concurrency] [connections] [seconds] [rounds]
# SERVER_A (default target/release/slotd) and SERVER_B (optional: a second build, e.g. main's,
# copied aside) are the binaries compared; ENV_A / ENV_B: environment of each (e.g.
# ENV_B=SLOTD__CALENDAR__FEED_INTERVAL_MS=25 with SERVER_B=$SERVER_A compares two settings). Needs: cargo build --release --bin slotd --bin
# slotd-load; redis-server, redis-cli, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
C=${1:-32}; N=${2:-4}; D=${3:-8}; R=${4:-2}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
SERVER_A=${SERVER_A:-$BIN/slotd}
SERVER_B=${SERVER_B:-}
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_redis
declare -A PORT PID
builds=(A); [ -n "$SERVER_B" ] && builds+=(B)
ENV_A=${ENV_A:-}; ENV_B=${ENV_B:-}
declare -A METRICS
for b in "${builds[@]}"; do
  bin=SERVER_$b; envs=ENV_$b; PORT[$b]=$(free_port); METRICS[$b]=$(free_port)
  # Each server's /metrics: its own BookAppointment latency histogram, scraped around the
  # half-load run, says how much of the client's tail is inside slotd.
  # shellcheck disable=SC2086 # ENV_x is a list of NAME=value words
  env ${!envs} SLOTD__METRICS__LISTEN="127.0.0.1:${METRICS[$b]}" "${!bin}" serve --config benches/load.toml --listen "127.0.0.1:${PORT[$b]}" \
    --redis-url "redis://127.0.0.1:$RP/" >"$WORK/slotd-$b.log" 2>&1 &
  PID[$b]=$!; pids+=(${PID[$b]})
  wait_healthy "${PORT[$b]}" "$WORK/slotd-$b.log"
done
load() { local b=$1 name=$2; shift 2
  "$BIN/slotd-load" --target "127.0.0.1:${PORT[$b]}" --server-pid "${PID[$b]}" --concurrency "$C" \
    --connections "$N" --duration "$D" --json "$@" >"$OUT/$name.json"
}
APPLICANTS=${APPLICANTS:-50000}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run=500000
for r in $(seq "$R"); do
  for b in "${builds[@]}"; do
    load "$b" "$b-$r-ping" --scenario ping
    run=$((run + 1))
    SPREAD=(--scenario book-spread --applicants "$APPLICANTS" --run-id "$run")
    "$BIN/slotd-load" --target "127.0.0.1:${PORT[$b]}" "${SPREAD[@]}" --setup-only >/dev/null
    load "$b" "$b-$r-book" "${SPREAD[@]}" --skip-setup --redis-url "redis://127.0.0.1:$RP/"
    half=$(python3 -c "import json; print(max(1, int(json.load(open('$OUT/$b-$r-book.json'))['ok_per_sec'] / 2)))")
    run=$((run + 1))
    SPREAD=(--scenario book-spread --applicants "$APPLICANTS" --run-id "$run")
    "$BIN/slotd-load" --target "127.0.0.1:${PORT[$b]}" "${SPREAD[@]}" --setup-only >/dev/null
    # Open loop: enough workers that none is ever the queue (latency counts from each
    # request's scheduled start).
    scrape() { curl -s "127.0.0.1:${METRICS[$b]}/metrics" | grep 'rpc_duration_seconds_bucket.*BookAppointment' || true; }
    scrape >"$OUT/$b-$r-half.before"
    "$BIN/slotd-load" --target "127.0.0.1:${PORT[$b]}" --server-pid "${PID[$b]}" --concurrency 256 \
      --connections "$N" --duration "$D" --json "${SPREAD[@]}" --skip-setup --rate "$half" \
      >"$OUT/$b-$r-half.json"
    scrape >"$OUT/$b-$r-half.after"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$R" "${builds[@]}" <<'PY'
import json, sys
out, rounds, builds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def j(n): return json.load(open(f"{out}/{n}.json"))
import re
def buckets(path):
    counts = {}
    for line in open(path):
        m = re.search(r'le="([^"]+)".*\} (\S+)$', line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + float(m.group(2))
    return counts
def server_tail(name):
    # Share of BookAppointment calls slotd itself took longer than 2 / 4 ms over the run
    # (its rpc_duration_seconds histogram: buckets 0.5 ms x 2^k).
    try:
        a, z = buckets(f"{out}/{name}.before"), buckets(f"{out}/{name}.after")
        total = z["+Inf"] - a.get("+Inf", 0)
        over = lambda le: 1 - (z[le] - a.get(le, 0)) / total
        return f"{over('0.002') * 100:.2f} % / {over('0.004') * 100:.2f} %"
    except (OSError, KeyError, ZeroDivisionError):
        return "-"
print("| build | round | ping/s | slotd µs per ping | book-spread OK/s | book ÷ ping | slotd µs per booking | Redis µs per booking | open loop at | p50 µs | p99 µs | start lag p50 / p99 µs | inside slotd > 2 / > 4 ms | achieved/s | passed |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    for b in builds:
        p, k, h = j(f"{b}-{r}-ping"), j(f"{b}-{r}-book"), j(f"{b}-{r}-half")
        cpu = lambda x, f: (x.get("server_cpu") or {}).get(f) or 0
        red = (k.get("redis") or {}).get("usec_per_booking") or 0
        print(f"| {b} | {r} | {p['throughput_per_sec']:.0f} | {cpu(p,'usec_per_request'):.1f} | {k['ok_per_sec']:.0f} | "
              f"{k['ok_per_sec']/p['throughput_per_sec']:.2f} | {cpu(k,'usec_per_booking'):.1f} | {red:.1f} | "
              f"{h['rate']:.0f}/s | {h['latency_us']['p50']} | {h['latency_us']['p99']} | "
              f"{(h.get('send_lag_us') or {}).get('p50', '-')} / {(h.get('send_lag_us') or {}).get('p99', '-')} | "
              f"{server_tail(f'{b}-{r}-half')} | {h['ok_per_sec']:.0f} | "
              f"{p['passed'] and k['passed'] and h['passed']} |")
PY
echo "raw reports in $OUT"
