#!/usr/bin/env bash
# Starts slotd as the README's quickstart does and runs the README's grpcurl examples against it,
# one command at a time with `set -e`: any failing call fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export SLOTD_ADMIN_TOKEN=dev-admin-token-change-me
log=$(mktemp)
# `--tests`: dependencies get the features `cargo test` gave them (dev-dependencies unify
# features only in builds that include tests), so after CI's test step this builds nothing;
# `cargo build --bin slotd` alone would recompile a third of the dependency tree.
cargo build --quiet --tests --bin slotd
if (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null; then
  echo "port 50051 is already in use; the README examples need it" >&2
  exit 1
fi
"${CARGO_TARGET_DIR:-target}/debug/slotd" serve --demo >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "slotd listening" "$log" && break
  sleep 0.1
done
grep -q "slotd listening" "$log" || { cat "$log"; echo "slotd did not start" >&2; exit 1; }

script=$(mktemp)
python3 .ci/readme.py examples README.md >"$script"
bash -euxo pipefail "$script"

# The examples' answers, checked: the booking and its cancellation happened.
grep -q '"status": "APPOINTMENT_STATUS_BOOKED"' /tmp/slotd-booked.json
# The waitlist example: the cancelled seat was offered to the entry, not left public.
grep -q '"status": "WAITLIST_STATUS_OFFERED"' /tmp/slotd-wl-offer.json
kill -TERM $pid
wait $pid || { cat "$log"; echo "slotd did not stop cleanly" >&2; exit 1; }
trap - EXIT
grep -q "slotd stopped" "$log"
echo "README examples passed"
