#!/usr/bin/env python3
"""What one heartbeat member costs Redis (benches/README.md section 23).

A throwaway redis-server gets a sorted set of 20,000 waiters (as the room's `seen`), then each
variant beats P members a call, N calls, every member's score moved forward as a tick would:
  direct       ZADD seen XX GT score id score id ... (no script)
  lua string   a script passing ARGV's score string to ZADD (room_lib.lua since section 23)
  lua number   a script passing tonumber(score): formatted anew per argument (before)
Prints Redis CPU (INFO cpu) per member, the round trip included.
  benches/heartbeat-cost.py [--members P] [--calls N]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

room_tick = import_module("room-tick")
cpu, start_server = room_tick.cpu, room_tick.start_server

LUA_STRING = """local args = {}
for i = 2, #ARGV do args[#args + 1] = ARGV[1]; args[#args + 1] = ARGV[i] end
return redis.call('ZADD', KEYS[1], 'XX', 'GT', unpack(args))"""
LUA_NUMBER = """local args, now = {}, tonumber(ARGV[1])
for i = 2, #ARGV do args[#args + 1] = now; args[#args + 1] = ARGV[i] end
return redis.call('ZADD', KEYS[1], 'XX', 'GT', unpack(args))"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=167)
    ap.add_argument("--calls", type=int, default=600)
    a = ap.parse_args()
    server, r = start_server()
    try:
        ids = ["%032x" % (j + 1) for j in range(20000)]
        now = 1_900_000_000_000
        for b in range(0, len(ids), 1000):
            args = []
            for i in ids[b:b + 1000]:
                args += [now, i]
            r.call("ZADD", "seen", *args)
        s_string = r.call("SCRIPT", "LOAD", LUA_STRING)
        s_number = r.call("SCRIPT", "LOAD", LUA_NUMBER)
        variants = [
            ("direct", lambda at, b: r.call("ZADD", "seen", "XX", "GT",
                                            *[x for i in b for x in (at, i)])),
            ("lua string", lambda at, b: r.call("EVALSHA", s_string, 1, "seen", at, *b)),
            ("lua number", lambda at, b: r.call("EVALSHA", s_number, 1, "seen", at, *b)),
        ]
        for name, beat in variants:
            c0, k = cpu(r), 0
            for _ in range(a.calls):
                now += 250
                beat(now, ids[k:k + a.members])
                k = (k + a.members) % (len(ids) - a.members)
            spent = cpu(r) - c0
            print("%-10s %.2f us of Redis CPU per member (%d a call)"
                  % (name, spent * 1e6 / (a.calls * a.members), a.members))
        print("load: %s" % open("/proc/loadavg").read().split()[:3])
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
