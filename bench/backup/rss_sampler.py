"""Peak-RSS sampler, copied into the benchmark container and run as root there.

Usage: rss_sampler.py OUT SPEC [SPEC...]
  SPEC is COMM or COMM@UID (e.g. python3@108, pg_basebackup, pgbackrest).
Every 50 ms it reads /proc/<pid>/status of every process whose comm matches a SPEC
and keeps, per pid, the highest VmHWM seen (the kernel's own peak-RSS counter, so a
short spike between two samples is not lost as long as the process is still alive at
the next sample). It also keeps the highest sum of VmRSS over all matching processes
seen in one sample. On SIGTERM it writes OUT as JSON. Its own pid goes to OUT.pid.
"""
import json
import os
import signal
import sys
import time

out = sys.argv[1]
specs = {}
for spec in sys.argv[2:]:
    comm, uid = (spec.split("@", 1) + [""])[:2]
    specs[comm] = int(uid) if uid else None
me = os.getpid()
peak = {}  # pid -> [comm, hwm_kb]
max_sum_rss = 0
stop = False


def on_term(signum, frame):  # pylint: disable=unused-argument
    global stop  # pylint: disable=global-statement
    stop = True


signal.signal(signal.SIGTERM, on_term)
with open(out + ".pid", "w") as fh:
    fh.write(str(me))

while not stop:
    tick = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/comm" % name) as fh:
                comm = fh.read().strip()
            if comm not in specs:
                continue
            with open("/proc/%s/status" % name) as fh:
                status = fh.read()
        except OSError:
            continue
        fields = {}
        for line in status.splitlines():
            key, value = (line.split(":", 1) + [""])[:2]
            fields[key] = value.split()
        want_uid = specs[comm]
        if want_uid is not None and int(fields.get("Uid", ["-1"])[0]) != want_uid:
            continue
        hwm = int(fields.get("VmHWM", ["0"])[0])
        rss = int(fields.get("VmRSS", ["0"])[0])
        tick += rss
        entry = peak.setdefault(int(name), [comm, 0])
        entry[1] = max(entry[1], hwm)
    max_sum_rss = max(max_sum_rss, tick)
    time.sleep(0.05)

by_comm = {}
for comm, hwm in peak.values():
    agg = by_comm.setdefault(comm, {"processes": 0, "max_hwm_kb": 0, "sum_hwm_kb": 0})
    agg["processes"] += 1
    agg["max_hwm_kb"] = max(agg["max_hwm_kb"], hwm)
    agg["sum_hwm_kb"] += hwm
result = {
    "sum_hwm_kb": sum(entry[1] for entry in peak.values()),
    "max_sum_rss_kb": max_sum_rss,
    "by_comm": by_comm,
}
with open(out + ".tmp", "w") as fh:
    json.dump(result, fh)
os.rename(out + ".tmp", out)
