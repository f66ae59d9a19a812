"""`INFO commandstats` of a booking run, read and tabulated one way for the bench scripts that
count a booking's Redis commands (book-calls.sh, book-replay.sh, book-group.sh; benches/README.md
§16, §19): imported from their inline Python with `sys.path.insert(0, <benches dir>)`."""

import re

# Never part of a booking: the scripts' own INFO / CONFIG / PING / FUNCTION LOAD / XLEN.
HARNESS = ("info", "config|resetstat", "ping", "function|load", "xlen")


def read(path, skip=HARNESS):
    """(FCALL's (calls, usec) or None, [(name, calls, usec)] of every other command not in
    skip), from a file holding `INFO commandstats`. A function's own commands count both under
    FCALL and under their own names."""
    rows, fcall = [], None
    for line in open(path):
        m = re.match(r"cmdstat_([a-z|]+):calls=(\d+),usec=(\d+),", line)
        if not m:
            continue
        name, calls, usec = m.group(1), int(m.group(2)), int(m.group(3))
        if name == "fcall":
            fcall = (calls, usec)
        elif name not in skip:
            rows.append((name, calls, usec))
    return fcall, rows


def table(rows, fcall, bookings):
    """Prints every command's calls and µs per booking (most µs first), their total, the Lua
    side (FCALL's µs less its commands') and FCALL's own, as a Markdown table."""
    print("| command | calls per booking | µs per call | µs per booking |")
    print("|---|---|---|---|")
    inner = 0
    for name, calls, usec in sorted(rows, key=lambda x: -x[2]):
        inner += usec
        print(f"| {name.upper()} | {calls / bookings:.2f} | {usec / calls:.2f} | {usec / bookings:.2f} |")
    print(f"| **commands, total** | {sum(c for _, c, _ in rows) / bookings:.2f} | | **{inner / bookings:.2f}** |")
    if fcall:
        print(f"| **Lua side** (FCALL − its commands) | | | **{(fcall[1] - inner) / bookings:.2f}** |")
        print(f"| **FCALL** (cmdstat_fcall) | {fcall[0] / bookings:.2f} | {fcall[1] / fcall[0]:.2f} | "
              f"**{fcall[1] / bookings:.2f}** |")
