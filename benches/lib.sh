# Shared by the bench scripts that run slotd on a throwaway Redis (book-calls.sh,
# book-cpu.sh, book-callgrind.sh, k6.sh): source it from the repository root. It makes $WORK
# (removed on exit, with every process in `pids` killed), the operator token and admission key
# slotd needs with Redis, and
#   free_port             a free TCP port of 127.0.0.1
#   start_redis           redis-server on 127.0.0.1:$RP (set here), no persistence, ready on return
#   wait_healthy PORT LOG [TRIES] [PAUSE]
#                         until slotd on 127.0.0.1:PORT answers a ping (exit 1 with LOG if never)
# Loopback only. Needs: redis-server, redis-cli, python3, $BIN/slotd-load.
free_port() { python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
start_redis() {
  RP=$(free_port)
  redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save '' --appendonly no \
    --maxmemory-policy noeviction >"$WORK/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start"; cat "$WORK/redis.log"; exit 1
}
wait_healthy() { local port=$1 log=$2 tries=${3:-100} pause=${4:-0.2}
  for _ in $(seq "$tries"); do
    "$BIN/slotd-load" --target "127.0.0.1:$port" --scenario ping --requests 1 --concurrency 1 \
      --connections 1 >/dev/null 2>&1 && return 0
    sleep "$pause"
  done
  echo "slotd on port $port did not become healthy"; cat "$log"; exit 1
}
export SLOTD_ADMIN_TOKEN="measure-admin-token-$RANDOM$RANDOM"
export SLOTD_ADMISSION_KEY="admission-key-$RANDOM$RANDOM-0123456789abcdef0123"
