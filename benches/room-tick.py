#!/usr/bin/env python3
"""Redis cost of the waiting room's ticks, without slotd (benches/README.md section 15).

A throwaway redis-server gets the room scripts (room_lib.lua prepended, as slotd loads them), a
paused room of W waiters (joined in batches of 256), then R replicas tick for S simulated
seconds: every 250 ms of room time (slotd's TICK_INTERVAL) each replica, offset from the others, makes what
`Room::tick` sends, with the clock passed as ARGV (so no real waiting): its heartbeats (each of
its W/R waiters every half of the waiter timeout, `--beats` times per timeout: 2 as slotd
since section 18, 3 before; spread over the ticks) and its event cursor.

  --mode three   settings read (HGETALL) + room_advance + room_sync per replica and tick
                 (slotd before section 15)
  --mode tick    one room_tick per replica and tick; the lease emulated in simulated time (the
                 first replica steps at each of its ticks, the others never): one step per tick

  --real-time    make the calls at their real times instead of back to back (a run then takes
                 S seconds): replica k at k/R of a tick after the first, as slotd's ticks fell
                 before section 23; with --aligned all replicas at the same instant, on
                 slotd's grid (src/app/cadence.rs). Back to back, Redis's caches stay warm;
                 at real times every call may find them cold (benches/redis-wake.py).

Prints Redis CPU (INFO cpu) and the scripts' usec (INFO commandstats) per room second, and per
waiter-second at W waiters. Plain RESP over a socket: no client library needed.
  benches/room-tick.py [--waiters W] [--replicas R] [--seconds S] [--rate PER_SEC] [--mode M]
                      [--tick-ms MS] [--real-time [--aligned]]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "src", "store", "redis", "lua")
P = "slotd:{b-room}:room:"
KEYS = [P + k for k in
        ("config", "state", "waiting", "seen", "active", "admits", "tickets", "clients", "ended", "log")]
TICK_MS = 250


class Redis:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)


# The constants slotd's library emits before every function (src/store/redis/functions.rs
# `constants`); the values as of section 18.
CONSTANTS = {"RATE_WINDOW_MS": 60000, "BATCH_MAX": 256, "OUTAGE_GAP_MS": 3000,
             "ENDED_TTL_MS": 3600000, "ROOM_DEFAULT_RATE": 600, "ROOM_DEFAULT_CAP": 1000,
             "ROOM_DEFAULT_SESSION_SECS": 600, "ROOM_DEFAULT_TIMEOUT_SECS": 60}


def script(name):
    head = "".join("local %s = %s\n" % kv for kv in CONSTANTS.items())
    with open(os.path.join(LUA, "room_lib.lua")) as lib, open(os.path.join(LUA, name)) as body:
        return head + lib.read() + "\n" + body.read()


def info(r, section):
    out = {}
    for line in r.call("INFO", section).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out


def cpu(r):
    i = info(r, "cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def start_server():
    """A throwaway redis-server on a free loopback port (no persistence), and a client of it."""
    work = tempfile.mkdtemp()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", work, "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            r = Redis(port)
            r.call("PING")
            return server, r
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("redis-server did not answer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--waiters", type=int, default=20000)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--mode", choices=("three", "tick"), default="tick")
    ap.add_argument("--beats", type=int, default=2)
    ap.add_argument("--real-time", action="store_true")
    # slotd's TICK_INTERVAL (100 before section 23).
    ap.add_argument("--tick-ms", type=int, default=TICK_MS)
    ap.add_argument("--aligned", action="store_true")
    a = ap.parse_args()

    server, r = start_server()
    try:
        sha = {n: r.call("SCRIPT", "LOAD", script("room_%s.lua" % n))
               for n in ("join", "configure", "advance", "sync")}
        if a.mode == "tick":
            sha["tick"] = r.call("SCRIPT", "LOAD", script("room_tick.lua"))

        def ev(name, *args):
            return r.call("EVALSHA", sha[name], 10, *KEYS, *args)

        now = 1_900_000_000_000
        per_min = int(a.rate * 60)
        ev("configure", now, 1, per_min, 10_000_000, 300, a.timeout, 1, 0)
        ids = []
        for b in range(0, a.waiters, 256):
            args = []
            for j in range(b, min(b + 256, a.waiters)):
                tid = "%032x" % (j + 1)
                ids.append(tid)
                args += ["crowd-%d.Kq7xZ2pLm9TvW4rN8sYb3c" % j, tid]
            reply = ev("join", now, *args)
            assert reply[0] == "OK", reply
        # Each replica watches its share; each waiter is beaten every timeout / beats.
        mine = [ids[k::a.replicas] for k in range(a.replicas)]
        beat_ms = a.timeout * 1000 // a.beats
        ticks_per_beat = max(1, beat_ms // a.tick_ms)
        cursors = [None] * a.replicas
        ev("configure", now, 1, per_min, 10_000_000, 300, a.timeout, 0, 0)
        r.call("CONFIG", "RESETSTAT")
        c0 = cpu(r)
        calls = 0
        admitted = 0
        steps = 0
        start = time.time()
        for t in range(a.seconds * 1000 // a.tick_ms):
            for k in range(a.replicas):
                offset = 0 if a.aligned else k * a.tick_ms // a.replicas
                at = now + t * a.tick_ms + offset
                if a.real_time:
                    time.sleep(max(0.0, start + (t * a.tick_ms + offset) / 1000 - time.time()))
                share = mine[k]
                # The waiters whose beat falls due at this tick (spread evenly).
                beats = [share[i] for i in range(t % ticks_per_beat, len(share), ticks_per_beat)]
                cursor = "" if cursors[k] is None else cursors[k]
                if a.mode == "three":
                    r.call("HGETALL", KEYS[0])
                    got = ev("advance", at, 1000, 100000)
                    admitted += int(got[1])
                    steps += 1
                    for i in range(0, max(1, len(beats)), 1000):
                        reply = ev("sync", at, cursor if i == 0 else "", 5000, *beats[i:i + 1000])
                        if i == 0:
                            head = int(reply[1])
                            cursors[k] = head
                    calls += 3
                else:
                    # The lease in simulated time: replica 0 steps at its every tick (lease 0),
                    # the others never (a lease longer than the run): one step per tick.
                    lease = 0 if k == 0 else 10 ** 9
                    reply = ev("tick", at, lease, 1000, 100000, cursor, 5000, *beats[:1000])
                    assert reply[0] == "OK", reply
                    if int(reply[8]) >= 0:
                        steps += 1
                        admitted += int(reply[8])
                    cursors[k] = int(reply[9])
                    calls += 1
        c1 = cpu(r)
        stats = info(r, "commandstats")
        # Top-level calls only (a script's inner commands are counted in its EVALSHA too).
        usec = sum(int(v.split("usec=")[1].split(",")[0]) for k, v in stats.items()
                   if k in ("cmdstat_evalsha", "cmdstat_hgetall"))
        ws = a.waiters * a.seconds
        print("mode %s%s: %d waiters, %d replicas, %d room s, %d steps, %d admitted, %d calls"
              % (a.mode, (" real time, aligned" if a.aligned else " real time") if a.real_time else "",
                 a.waiters, a.replicas, a.seconds, steps, admitted, calls))
        for k, v in sorted(stats.items()):
            print("  %s %s" % (k, v))
        print("  Redis CPU %.2f ms per room second (%.3f us per waiter-second); commands' usec %.2f ms "
              "per room second (%.3f us per waiter-second)"
              % ((c1 - c0) * 1e3 / a.seconds, (c1 - c0) * 1e6 / ws, usec / 1e3 / a.seconds, usec / ws))
        print("  load: %s" % open("/proc/loadavg").read().split()[:3])
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
