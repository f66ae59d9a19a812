#!/usr/bin/env bash
# The waiting room's per-call costs for deploy/DEPLOYMENT.md (Capacity planning): a throwaway
# redis-server, one release slotd on it, then
#   watch-1: one Watch stream for D s (room on, paused)         -> the replica's own steady cost:
#            r_step (Redis µs per admission step, 10 a second, settings read included) and
#            r_sweep (Redis µs per hold sweep, once a second, no holds due)
#   watch-W: W Watch streams for D s                            -> r_watch (Redis µs per
#            waiter-second: the replica's batched sync, heartbeats included), c_watch (slotd CPU
#            µs per waiter-second), each as the difference to watch-1; messages per
#            waiter-second; m_watch (slotd RSS per open stream, peak minus before).
#   join   : `slotd-load --scenario join` (room on)            -> r_join  (Redis µs per join)
# Commands run inside scripts also appear in commandstats under their own names: only FCALL (EVALSHA
# before #16) and the commands slotd sends itself (HGETALL of the settings, ZRANGEBYSCORE of the sweep)
# are added up.
# Reads Redis' INFO commandstats and slotd's CPU time (/proc/PID/stat) around each run.
# Loopback only.   benches/room-costs.sh [streams W] [seconds D]
# Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
W=${1:-2000}; D=${2:-20}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
OUT=${OUT:-$(mktemp -d)}
read -r RP SP < <(python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
WORK=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SLOTD_ADMIN_TOKEN="measure-admin-token-$RANDOM$RANDOM"
# Required with Redis (tickets and tokens outlive the process); >= 32 characters.
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$SP" --redis-url "redis://127.0.0.1:$RP/" \
  >"$WORK/slotd.log" 2>&1 &
SLOTD_PID=$!; pids+=($SLOTD_PID)
for _ in $(seq 100); do "$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario ping --requests 1 \
  --concurrency 1 --connections 1 >/dev/null 2>&1 && break; sleep 0.2; done
cpu() { awk '{print $14 + $15}' "/proc/$SLOTD_PID/stat"; }  # utime + stime, clock ticks
run() { local name=$1; shift
  redis-cli -p "$RP" config resetstat >/dev/null
  cpu >"$OUT/$name.cpu0"
  "$BIN/slotd-load" --target "127.0.0.1:$SP" "$@" --json >"$OUT/$name.json"
  cpu >"$OUT/$name.cpu1"
  redis-cli -p "$RP" info commandstats >"$OUT/$name.cmdstats"
}
# The join run last: it leaves a large line behind, which the steps then expire.
run watch-1 --scenario watch --concurrency 1 --connections 1 --duration "$D"
run watch-W --scenario watch --concurrency "$W" --connections 16 --duration "$D" --server-pid "$SLOTD_PID"
run join --scenario join --concurrency 64 --connections 4 --duration "$D"
python3 - "$OUT" "$(getconf CLK_TCK)" "$W" <<'PY'
import json, re, sys
out, tck, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def stats(name):
    s = {}
    for line in open(f"{out}/{name}.cmdstats"):
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+),", line)
        if m: s[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return s
def report(name): return json.load(open(f"{out}/{name}.json"))
def cpu_s(name):
    return (float(open(f"{out}/{name}.cpu1").read()) - float(open(f"{out}/{name}.cpu0").read())) / tck
def usec(s, *cmds): return sum(s.get(c, (0, 0))[1] for c in cmds)
j, sj = report("join"), stats("join")
print(f"join: {j['requests']} joins in {j['seconds']:.1f} s ({j['throughput_per_sec']:.0f}/s)")
print(f"  r_join  = {usec(sj, 'fcall', 'evalsha') / max(j['ok'], 1):.2f} us Redis per join (FCALL, the replica's steps included)")
one, s1 = report("watch-1"), stats("watch-1")
t1 = one["seconds"]
ev1, hg1 = tuple(a + b for a, b in zip(s1.get("fcall", (0, 0)), s1.get("evalsha", (0, 0)))), s1.get("hgetall", (0, 0))
zr1 = s1.get("zrangebyscore", (0, 0))
print(f"watch-1: {t1:.1f} s; FCALL {ev1[0]} calls {ev1[1]} us, HGETALL {hg1[0]} calls {hg1[1]} us, "
      f"ZRANGEBYSCORE {zr1[0]} calls {zr1[1]} us")
print(f"  r_step  = {(ev1[1] + hg1[1]) / (10 * t1):.2f} us Redis per admission step incl. the settings read (10 a second)")
print(f"  r_sweep = {zr1[1] / max(zr1[0], 1):.2f} us Redis per hold sweep with nothing due ({zr1[0] / t1:.1f} a second)")
many, sw = report("watch-W"), stats("watch-W")
tw = many["seconds"]
base = (ev1[1] + hg1[1]) / t1
redis_w = (usec(sw, "fcall", "evalsha", "hgetall") / tw - base) * tw
polls = many["watch_streams_open"] * tw
cpu_w = (cpu_s("watch-W") / tw - cpu_s("watch-1") / t1) * tw
print(f"watch-W: {many['watch_streams_open']} streams open, {tw:.1f} s, {many['watch_messages']} messages")
print(f"  r_watch  = {redis_w / max(polls, 1):.3f} us Redis per waiter-second (FCALL + HGETALL over watch-1)")
print(f"  c_watch  = {cpu_w * 1e6 / max(polls, 1):.2f} us slotd CPU per waiter-second")
print(f"  msgs     = {many['watch_messages'] / max(polls, 1):.3f} messages per waiter-second (the first one included)")
b, p = many.get("server_rss_kib_before"), many.get("server_rss_kib_peak")
if b and p:
    print(f"  m_watch  = {(p - b) * 1024 / max(many['watch_streams_open'], 1) / 1024:.2f} KiB slotd RSS per stream ({b} -> {p} KiB)")
PY
echo "raw reports in $OUT"
