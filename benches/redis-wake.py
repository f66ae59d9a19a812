#!/usr/bin/env python3
"""What one call costs Redis when it arrives alone (benches/README.md section 23).

A throwaway redis-server gets a one-line script (`return 1`); the script is called back to back,
then once every GAP seconds for each GAP given. For each: Redis's CPU per call (INFO cpu, less
the idle server's own CPU over the same time, measured first) and the call's own time as
INFO commandstats counts it. On a VM whose caches and vCPU go cold while Redis sleeps in
epoll_wait, a call that wakes Redis costs it far more than the same call back to back: what a
replica's periodic loops cost is mostly how often they wake Redis (src/app/cadence.rs).
  benches/redis-wake.py [--calls N] [--gaps 0.01,0.05,0.1,0.25]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

room_tick = import_module("room-tick")
cpu, start_server = room_tick.cpu, room_tick.start_server


def call_usec(r):
    for line in r.call("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return float(line.split("usec_per_call=")[1].split(",")[0])
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--gaps", default="0.01,0.05,0.1,0.25")
    a = ap.parse_args()
    server, r = start_server()
    try:
        sha = r.call("SCRIPT", "LOAD", "return 1")
        time.sleep(1)
        c0, t0 = cpu(r), time.time()
        time.sleep(10)
        idle = (cpu(r) - c0) / (time.time() - t0)
        print("idle redis-server: %.2f ms of CPU per second (hz 10)" % (idle * 1e3))
        for gap in [0.0] + [float(g) for g in a.gaps.split(",")]:
            n = 20000 if gap == 0 else a.calls
            r.call("CONFIG", "RESETSTAT")
            c0, t0 = cpu(r), time.time()
            for _ in range(n):
                if gap:
                    time.sleep(gap)
                r.call("EVALSHA", sha, 0)
            spent = cpu(r) - c0 - idle * (time.time() - t0)
            print("gap %5.3f s: %6d calls, Redis CPU %6.1f us per call beyond idle, the call itself %5.2f us"
                  % (gap, n, spent * 1e6 / n, call_usec(r)))
        print("load: %s" % open("/proc/loadavg").read().split()[:3])
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
