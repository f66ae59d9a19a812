#!/usr/bin/env bash
# A group booking's Redis cost per added applicant (benches/README.md §19): loads one slotd
# functions library into a throwaway redis-server, writes the day hashes and receipts a run
# needs (not counted), then pipes K `book` FCALLs of n applicants each (fresh applicants, spread
# over 43 days x 16 times like book-spread) with `redis-cli --pipe`, once per n given, each on a
# fresh server, and prints FCALL µs per booking (INFO commandstats) and its commands. The FCALLs
# are built here in the call shape of the layout given (the arguments slotd would send).
# Loopback only.
#   benches/book-group.sh <library.lua> <layout 1|2> [bookings] [n ...]
# e.g. benches/book-group.sh <(target/release/slotd redis library) 2 10000 1 5
# (layout 1: the library of a slotd built from before issue #17.)
# EXTRA_LIB: a second library loaded next to it (benches/book-floor.lua); FUNC: the function
# each FCALL calls instead of the library's `book`, with the same keys and arguments
# (`floor_dec` gets the day key only). benches/book-floor.sh uses both.
set -euo pipefail
BENCHES=$(cd "$(dirname "$0")" && pwd)
LIB=$1; LAYOUT=$2; K=${3:-10000}; shift 3 || true
[ $# -gt 0 ] || set -- 1 5
WORK=$(mktemp -d)
cp "$LIB" "$WORK/lib.lua"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
for N in "$@"; do
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  RPID=$!; pids+=($RPID)
  for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$PORT" -x function load replace <"$WORK/lib.lua" >/dev/null
  [ -z "${EXTRA_LIB:-}" ] || redis-cli -p "$PORT" -x function load replace <"$EXTRA_LIB" >/dev/null
  python3 - "$WORK" "$LAYOUT" "$K" "$N" <<'PY'
import datetime, json, os, sys
work, layout, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
name = open(f"{work}/lib.lua").readline().split("name=")[1].strip()
func = os.environ.get("FUNC") or f"{name}_book"
P = "slotd:{slotd}:"
def resp(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
days = [(datetime.date(2030, 1, 1) + datetime.timedelta(d)).isoformat() for d in range(43)]
times = [f"{8 + i // 4:02d}{(i % 4) * 15:02d}" for i in range(16)]
now = 1893456000000
with open(f"{work}/setup.resp", "wb") as w:
    for d in days:
        fields = []
        for t in times:
            fields += [f"{t}:c", 100000, f"{t}:b", 0, f"{t}:x", 0]
        w.write(resp(["HSET", f"{P}day:BEIJING:ALL_OTHERS:{d}"] + fields))
    for i in range(k * n):
        w.write(resp(["HSET", f"{P}receipt:R{i:09d}", "passport", f"P{i:09d}", "paid_at",
                      "2029-12-31T00:00:00Z", "expires_ms", now + 10**10, "amount_minor",
                      18500, "currency", "USD"]))
with open(f"{work}/calls.resp", "wb") as w:
    for b in range(k):
        d, t = days[b % 43], times[(b // 43) % 16]
        conf = f"C{b:013d}"
        hhmm, hm = t, f"{t[:2]}:{t[2:]}"
        label = f"BEIJING:ALL_OTHERS:{d}"
        ids = [b * n + j for j in range(n)]
        apps = json.dumps([{"passport": f"P{i:09d}", "given_name": "Wei", "surname": "Zhang",
                            "ds160": f"AA{i:08d}", "receipt": f"R{i:09d}"} for i in ids],
                          separators=(",", ":"))
        fp = f"{b:040x}"
        pairs = []
        for i in ids:
            pairs += [f"{P}receipt:R{i:09d}", f"{P}passport:P{i:09d}"]
        passports = [f"P{i:09d}" for i in ids]
        text = "2030-01-01T00:00:00.000000000Z"
        if layout == "1":
            keys = [f"{P}day:{label}", f"{P}active:{label}", f"{P}manifest:{label}",
                    f"{P}appt:{conf}", f"{P}idem:book:r{b}", f"{P}events"] + pairs + [
                    f"{P}holds:{label}", f"{P}holds-due"]
            minutes = int(t[:2]) * 60 + int(t[2:])
            argv = [now, fp, conf, hhmm, f"{minutes:04d}-{conf}", n, 86400, text, "BEIJING",
                    "ALL_OTHERS", d, hm, apps] + passports + [label]
        else:
            keys = [f"{P}day:{label}", f"{P}active:{label}", f"{P}appt:{conf}",
                    f"{P}idem:book:r{b}", f"{P}events"] + pairs + [
                    f"{P}holds:{label}", f"{P}holds-due"]
            argv = [now, fp, conf, hhmm, n, 86400, f"{fp}|{conf}|{now + 86400000}", text,
                    "BEIJING", "ALL_OTHERS", d, hm, apps] + passports + [
                    label, f"BEIJING/ALL_OTHERS/{d} {hm}"]
        if func == "floor_dec":
            w.write(resp(["FCALL", func, 1, keys[0]]))
        else:
            w.write(resp(["FCALL", func, len(keys)] + keys + argv))
PY
  redis-cli -p "$PORT" --pipe <"$WORK/setup.resp" >/dev/null
  redis-cli -p "$PORT" config resetstat >/dev/null
  redis-cli -p "$PORT" --pipe <"$WORK/calls.resp" >"$WORK/pipe.txt" 2>&1
  redis-cli -p "$PORT" info commandstats >"$WORK/stats.txt"
  booked=$(redis-cli -p "$PORT" --scan --pattern 'slotd:{slotd}:appt:*' | wc -l)
  echo "== $N applicants per booking, layout $LAYOUT${FUNC:+, $FUNC}: $booked of $K booked; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 - "$WORK/stats.txt" "$BENCHES" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import cmdstats
fcall, rows = cmdstats.read(sys.argv[1])
b = fcall[0]
inner = sum(u for _, _, u in rows)
print(" ".join(f"{n.upper()} {c / b:.0f}" for n, c, _ in sorted(rows)))
print(f"commands {sum(c for _, c, _ in rows) / b:.2f} per booking, {inner / b:.2f} µs; "
      f"Lua side {(fcall[1] - inner) / b:.2f} µs; FCALL **{fcall[1] / b:.2f}** µs per booking")
PY
  kill "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true
  rm -f "$WORK/dump.rdb"
done
