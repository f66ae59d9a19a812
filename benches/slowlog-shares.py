#!/usr/bin/env python3
"""Per-script shares of a Redis SLOWLOG (benches/README.md section 15).

Reads every entry of the SLOWLOG of 127.0.0.1:PORT (run Redis with `slowlog-log-slower-than 0`
and a large `slowlog-max-len`), keeps the top-level calls (a script's own commands are logged
too, from client `?:0`), names each EVALSHA by its script (the SHA1 of the source as slotd
loads it: room scripts after room_lib.lua, booking scripts after holds_lib.lua) and prints, per
name: calls, total and median µs, share of the total. SLOWLOG inflates scripts with many inner
commands (each is logged): read the shares, not the absolute figures.
  benches/slowlog-shares.py PORT
"""

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

Redis = import_module("room-tick").Redis
LUA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "store",
                   "redis", "lua")


def read(name):
    with open(os.path.join(LUA, name)) as f:
        return f.read()


def names():
    out = {}
    lib, holds = read("room_lib.lua"), read("holds_lib.lua")
    for f in sorted(os.listdir(LUA)):
        if not f.endswith(".lua"):
            continue
        body = read(f)
        for source in (body, lib + "\n" + body, holds + "\n" + body,
                       read("cluster_guard.lua") + "\n" + holds + "\n" + body):
            out[hashlib.sha1(source.encode()).hexdigest()] = f[:-4]
    return out


def main():
    r = Redis(int(sys.argv[1]))
    sha = names()
    rows = {}
    for entry in r.call("SLOWLOG", "GET", "-1"):
        _, _, usec, args = entry[:4]
        client = entry[4] if len(entry) > 4 else ""
        if client == "?:0" or not args:
            continue
        cmd = args[0].lower()
        if cmd in ("slowlog", "info", "config"):
            continue
        if cmd == "evalsha":
            name = sha.get(args[1], "evalsha " + args[1][:8])
        elif cmd in ("fcall", "fcall_ro") and len(args) > 1:
            # The library's functions are named by operation (and a version suffix).
            name = "fcall " + args[1]
        else:
            name = cmd
        rows.setdefault(name, []).append(int(usec))
    total = sum(sum(v) for v in rows.values()) or 1
    print("%-22s %8s %10s %8s %6s" % ("call", "calls", "total us", "p50 us", "share"))
    for name, v in sorted(rows.items(), key=lambda kv: -sum(kv[1])):
        v.sort()
        print("%-22s %8d %10d %8d %5.1f%%" % (name, len(v), sum(v), v[len(v) // 2],
                                            100.0 * sum(v) / total))


if __name__ == "__main__":
    main()
