#!/usr/bin/env bash
# The floor of a booking's Redis cost (benches/README.md §25): the slotd library's `book` and
# the variants of benches/book-floor.lua (book.lua's calls with writes left out or merged, and
# the issue's bare one-key decrement), each as K single-applicant FCALLs on a fresh Redis
# (benches/book-group.sh), interleaved for R rounds; prints each one's best FCALL µs per
# booking and its ratio to the decrement's best (the issue's R2). Loopback only.
#   benches/book-floor.sh [bookings] [rounds]
# Needs: cargo build --release --bin slotd; redis-server, redis-cli, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
K=${1:-10000}; R=${2:-3}
BIN=${BIN:-"${CARGO_TARGET_DIR:-$ROOT/target}/release"}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
"$BIN/slotd" redis library >"$WORK/lib.lua"
variants=(book floor_layout2 floor_packed floor_packed_event1 floor_packed_noidem floor_bare floor_dec)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$R"); do
  for v in "${variants[@]}"; do
    func=$v; [ "$v" = book ] && func=
    us=$(EXTRA_LIB=benches/book-floor.lua FUNC=$func bash benches/book-group.sh "$WORK/lib.lua" 2 "$K" 1 \
      | sed -n 's/.*FCALL \*\*\([0-9.]*\)\*\* µs per booking.*/\1/p')
    echo "$r $v $us" | tee -a "$WORK/runs.txt"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/runs.txt" <<'PY'
import sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, v, us = line.split()
    runs[v].append(float(us))
best = {v: min(u) for v, u in runs.items()}
dec = best["floor_dec"]
print("| function | FCALL µs per booking, best | the runs | ÷ decrement (R2) |")
print("|---|---|---|---|")
for v, u in runs.items():
    print(f"| `{v}` | {best[v]:.2f} | {', '.join(f'{x:.1f}' for x in u)} | {best[v] / dec:.1f} |")
PY
