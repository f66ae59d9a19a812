#!/usr/bin/env bash
# A booking's Redis cost without the load generator and slotd on the same cores (benches/README.md
# §16): captures the FCALLs of a bounded book-spread run (MONITOR) and the store just before it
# (RDB, functions included), then replays them with `redis-cli --pipe` (one client, pipelined)
# on a fresh Redis started from that RDB, once per library given, and prints each replay's
# per-command table (INFO commandstats counts each command a function calls under its own name).
# Loopback only.
#   benches/book-replay.sh [bookings] [library.lua ...]
# Each library file is loaded with FUNCTION LOAD REPLACE before its replay; it must register
# the same function names (e.g. an edited `slotd redis library`). A library of another call
# shape (another key layout) needs its own capture: BIN=<that build's dir> (benches/README.md
# §19). Without one: the library
# slotd loaded. Needs: cargo build --release --bin slotd --bin slotd-load; redis-server, redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=${1:-5000}; shift || true
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
free_ports() { python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])'; }
WORK=$(mktemp -d); read -r RP SP < <(free_ports)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/a"
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK/a" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SLOTD_ADMIN_TOKEN="measure-admin-token-$RANDOM$RANDOM"
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
"$BIN/slotd" serve --config benches/load.toml --listen "127.0.0.1:$SP" --redis-url "redis://127.0.0.1:$RP/" \
  >"$WORK/slotd.log" 2>&1 &
SLOTD=$!; pids+=($SLOTD)
ready=0
for _ in $(seq 100); do "$BIN/slotd-load" --target "127.0.0.1:$SP" --scenario ping --requests 1 \
  --concurrency 1 --connections 1 >/dev/null 2>&1 && { ready=1; break; }; sleep 0.2; done
[ "$ready" = 1 ] || { echo "slotd did not become healthy"; cat "$WORK/slotd.log"; exit 1; }
SPREAD=(--scenario book-spread --applicants "$B" --run-id 171718)
"$BIN/slotd-load" --target "127.0.0.1:$SP" "${SPREAD[@]}" --setup-only >/dev/null
redis-cli -p "$RP" save >/dev/null
cp "$WORK/a/dump.rdb" "$WORK/start.rdb"
redis-cli -p "$RP" monitor >"$WORK/monitor.txt" &
MON=$!; pids+=($MON)
sleep 0.5
"$BIN/slotd-load" --target "127.0.0.1:$SP" "${SPREAD[@]}" --skip-setup --requests "$B" --duration 600 \
  --concurrency 16 --connections 2 >/dev/null
sleep 0.5
kill "$MON" "$SLOTD" 2>/dev/null || true
# MONITOR's quoting (sdscatrepr) back to RESP: the book FCALLs only.
python3 - "$WORK/monitor.txt" "$WORK/calls.resp" <<'PY'
import re, sys
tok = re.compile(r'"((?:[^"\\]|\\.)*)"')
esc = {'n': b'\n', 'r': b'\r', 't': b'\t', 'a': b'\a', 'b': b'\b', '\\': b'\\', '"': b'"'}
def unq(s):
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i]
        if c == '\\':
            d = s[i + 1]
            if d == 'x': out += bytes([int(s[i + 2:i + 4], 16)]); i += 4; continue
            out += esc[d]; i += 2; continue
        out += c.encode(); i += 1
    return bytes(out)
n = 0
with open(sys.argv[2], 'wb') as w:
    for line in open(sys.argv[1], encoding='latin-1'):
        args = [unq(t) for t in tok.findall(line.split('] ', 1)[-1])]
        if len(args) < 2 or args[0].lower() != b'fcall' or not args[1].endswith(b'_book'): continue
        w.write(b'*%d\r\n' % len(args))
        for a in args: w.write(b'$%d\r\n%s\r\n' % (len(a), a))
        n += 1
print(f"captured {n} book FCALLs")
PY
run=0
for LIB in "${@:-}"; do
  run=$((run + 1)); mkdir -p "$WORK/r$run"; cp "$WORK/start.rdb" "$WORK/r$run/dump.rdb"
  read -r PORT _ < <(free_ports)
  redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/r$run" --dbfilename dump.rdb --save '' \
    --appendonly no >"$WORK/r$run.log" 2>&1 &
  RPID=$!; pids+=($RPID)
  for _ in $(seq 300); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  if [ -n "$LIB" ]; then redis-cli -p "$PORT" -x function load replace <"$LIB" >/dev/null; fi
  redis-cli -p "$PORT" config resetstat >/dev/null
  redis-cli -p "$PORT" --pipe <"$WORK/calls.resp" >"$WORK/r$run.pipe" 2>&1
  redis-cli -p "$PORT" info commandstats >"$WORK/r$run.stats"
  echo "== library: ${LIB:-as loaded by slotd}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 - "$WORK/r$run.stats" <<'PY'
import sys
sys.path.insert(0, "benches")
import cmdstats
fcall, rows = cmdstats.read(sys.argv[1])
# One FCALL per booking: per FCALL is per booking.
cmdstats.table(rows, fcall, fcall[0])
PY
  grep -m1 'errors:' "$WORK/r$run.pipe" || true
  kill "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true
done
