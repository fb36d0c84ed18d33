"""Helper of bench/failover/run.sh: cluster state, the write probe, the kill, RTO and the report.

Usage (run.sh calls these; all state goes through files and stdout):
  probe.py setup                      role bench_probe + table bench_probe.writes on the current primary
  probe.py health                     "PRIMARY STANDBY..." if exactly one primary has the 3 others
                                      streaming from it; else a message on stderr and exit 1
  probe.py state                      one line per server (for messages; never fails)
  probe.py best-standby PRIMARY       "HOST host=lsn,...": the standby with the highest
                                      pg_last_wal_receive_lsn() now (all asked at once; ties: by name)
  probe.py write LOG                  the probe: INSERT every 50 ms through the client endpoint
                                      (libpq multi-host string, target_session_attrs=read-write),
                                      one line per event in LOG: "<monotonic> ok|local|err|connect ..."
  probe.py wait-acks LOG N TIMEOUT    wait until LOG has N acknowledged writes
  probe.py kill HOST                  docker kill HOST; prints "T_KILL_MONO T_KILL_REAL KILL_CMD_S", taken
                                      when `docker kill` returned (the server is gone by then)
  probe.py wait-ack LOG T_KILL_MONO OLD_HOST TIMEOUT
                                      wait for the first write acknowledged after T_KILL_MONO;
                                      prints JSON {rto, addr, ...} (rto null when none came)
  probe.py record OUT key=value ...   append one round (JSON values allowed) to OUT (JSON lines)
  probe.py report ROUNDS TARGET_S     markdown tables of the rounds

Clock: time.monotonic() is CLOCK_MONOTONIC, one clock for every process of the host, so the
probe process and the kill process share it. The report JSON of failover.yml uses wall-clock
epoch seconds; `kill` prints both clocks at the same instant to map one onto the other.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

DB_HOSTS = {  # inventories/lab/hosts.yml
    "db-east-1": "172.30.77.11",
    "db-east-2": "172.30.77.12",
    "db-east-3": "172.30.77.13",
    "db-west-1": "172.30.77.21",
}
PASSWORD = os.environ.get("BENCH_PROBE_PASSWORD", "bench-probe-lab-secret")  # the lab's, not a secret
# The client endpoint as the issue defines it, plus tcp_user_timeout/keepalives: without them a
# commit in flight to a server that vanished waits for TCP's retransmission limit (minutes).
# libpq raises connect_timeout=1 to its minimum of 2 s (per host).
DSN = ("host=%s port=5432 dbname=rtx user=bench_probe password=%s sslmode=require "
       "target_session_attrs=read-write connect_timeout=1 "
       "tcp_user_timeout=1000 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2 "
       "application_name=bench_probe" % (",".join(DB_HOSTS.values()), PASSWORD))
INTERVAL = float(os.environ.get("BENCH_PROBE_INTERVAL", "0.05"))
# A commit not answered within this is cancelled (pg_cancel_backend from the client). A commit
# that returns only because its wait for the synchronous standby was cancelled is logged as
# "local": committed on that server, never acknowledged as durable, not counted for the RTO.
STMT_WATCHDOG = float(os.environ.get("BENCH_PROBE_WATCHDOG", "2.0"))


def psql(host, sql, db="postgres", timeout=20):
    """Run SQL as postgres in the container; stdout (stripped) or None when it failed."""
    try:
        r = subprocess.run(["docker", "exec", host, "runuser", "-u", "postgres", "--", "psql", "-XAtq",
                            "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def running(host):
    r = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", host],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() == "true"


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def node(host):
    if not running(host):
        return dict(host=host, state="container stopped")
    out = psql(host, "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_receive_lsn()::text, ''), "
                     "(SELECT timeline_id FROM pg_control_checkpoint()), "
                     "coalesce((SELECT sender_host || ' ' || status FROM pg_stat_wal_receiver), '-')")
    if out is None:
        return dict(host=host, state="postgres not answering")
    rec, recv, tli, receiver = out.split("|")
    return dict(host=host, state="standby" if rec == "t" else "primary", receive_lsn=recv or None,
                timeline=int(tli), receiver=receiver)


def nodes():
    with ThreadPoolExecutor(len(DB_HOSTS)) as pool:
        return list(pool.map(node, sorted(DB_HOSTS)))


def streaming_from(primary):
    out = psql(primary, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'") or ""
    return sorted(line for line in out.splitlines() if line)


def describe(ns):
    return "; ".join("%s: %s%s" % (n["host"], n["state"], " tli %s, receiver %s" % (n["timeline"], n["receiver"])
                                   if "timeline" in n else "") for n in ns)


def cmd_health():
    ns = nodes()
    primaries = [n["host"] for n in ns if n["state"] == "primary"]
    if len(primaries) != 1:
        sys.stderr.write("cluster not healthy: %d primaries (%s). %s\n"
                         % (len(primaries), ", ".join(primaries) or "none", describe(ns)))
        return 1
    primary = primaries[0]
    others = sorted(h for h in DB_HOSTS if h != primary)
    streaming = streaming_from(primary)
    if streaming != others:
        sys.stderr.write("cluster not healthy: %s is the primary but only [%s] stream from it (expected %s). %s\n"
                         % (primary, ", ".join(streaming), ", ".join(others), describe(ns)))
        return 1
    print(" ".join([primary] + others))
    return 0


def cmd_state():
    ns = nodes()
    for n in ns:
        extra = ""
        if n["state"] == "primary":
            extra = " streaming to: %s" % (", ".join(streaming_from(n["host"])) or "none")
        elif "timeline" in n:
            extra = " (timeline %s, receiver %s)" % (n["timeline"], n["receiver"])
        print("  %-10s %s%s" % (n["host"], n["state"], extra))
    return 0


def cmd_best_standby(primary):
    """Highest pg_last_wal_receive_lsn() of the standbys, all asked at the same time; ties: by name."""
    standbys = sorted(h for h in DB_HOSTS if h != primary)
    with ThreadPoolExecutor(len(standbys)) as pool:
        got = list(pool.map(lambda h: psql(h, "SELECT pg_last_wal_receive_lsn()"), standbys))
    ranked = sorted(((lsn(v), h) for h, v in zip(standbys, got) if v), key=lambda x: (-x[0], x[1]))
    if not ranked:
        sys.stderr.write("no standby answered\n")
        return 1
    print("%s %s" % (ranked[0][1], ",".join("%s=%s" % (h, v or "?") for h, v in zip(standbys, got))))
    return 0


def cmd_setup():
    out = subprocess.run([sys.executable, __file__, "health"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        return 1
    primary = out.stdout.split()[0]
    steps = [
        ("postgres", "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_probe') THEN "
                     "CREATE ROLE bench_probe LOGIN PASSWORD '%s'; ELSE ALTER ROLE bench_probe LOGIN PASSWORD '%s'; "
                     "END IF; END$$" % (PASSWORD, PASSWORD)),
        ("rtx", "CREATE SCHEMA IF NOT EXISTS bench_probe AUTHORIZATION bench_probe"),
        ("rtx", "CREATE TABLE IF NOT EXISTS bench_probe.writes (id bigserial, at timestamptz DEFAULT now())"),
        ("rtx", "ALTER TABLE bench_probe.writes OWNER TO bench_probe"),
    ]
    for db, sql in steps:
        if psql(primary, sql, db=db) is None:
            sys.stderr.write("setup failed on %s: %s\n" % (primary, sql))
            return 1
    print(primary)
    return 0


# -- the probe -----------------------------------------------------------------------------------

def cmd_write(log):
    import psycopg2  # only the probe needs it

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    out = open(log, "a", buffering=1)

    def emit(kind, detail=""):
        out.write("%.6f %s %s\n" % (time.monotonic(), kind, detail.replace("\n", " ")[:300]))

    def cancel(c):
        try:
            c.cancel()
        except Exception:  # the server is gone: tcp_user_timeout ends the statement
            pass

    emit("start", "pid %d" % os.getpid())
    conn, addr = None, "-"
    while not stop.is_set():
        try:
            if conn is None:
                conn = psycopg2.connect(DSN)
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT host(inet_server_addr())")
                    addr = cur.fetchone()[0]
                emit("connect", addr)
            del conn.notices[:]
            watchdog = threading.Timer(STMT_WATCHDOG, cancel, (conn,))
            watchdog.start()
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench_probe.writes DEFAULT VALUES")
            finally:
                watchdog.cancel()
            if any("synchronous replication" in n for n in conn.notices):
                emit("local", addr)
            else:
                emit("ok", addr)
        except psycopg2.Error as exc:
            emit("err", "%s %s" % (addr, str(exc).strip()))
            try:
                if conn is not None:
                    conn.close()
            except psycopg2.Error:
                pass
            conn, addr = None, "-"
        stop.wait(INTERVAL)
    emit("stop")
    return 0


def read_log(log):
    events = []
    if not os.path.exists(log):  # the probe has not opened it yet
        return events
    with open(log) as fh:
        for line in fh:
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) >= 2:
                try:
                    events.append((float(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
                except ValueError:
                    pass
    return events


def cmd_wait_acks(log, count, timeout):
    deadline = time.monotonic() + float(timeout)
    while time.monotonic() < deadline:
        if sum(1 for e in read_log(log) if e[1] == "ok") >= int(count):
            return 0
        time.sleep(0.1)
    tail = [" ".join(map(str, e)) for e in read_log(log)[-5:]]
    sys.stderr.write("the probe has not %s acknowledged writes after %s s; last events:\n  %s\n"
                     % (count, timeout, "\n  ".join(tail)))
    return 1


def cmd_kill(host):
    t0 = time.monotonic()
    r = subprocess.run(["docker", "kill", host], capture_output=True, text=True, check=False)
    t_mono, t_real = time.monotonic(), time.time()
    if r.returncode != 0:
        sys.stderr.write("docker kill %s failed: %s\n" % (host, r.stderr.strip()))
        return 1
    print("%.6f %.6f %.3f" % (t_mono, t_real, t_mono - t0))
    return 0


def cmd_wait_ack(log, t_kill, old_host, timeout):
    t_kill, old_ip = float(t_kill), DB_HOSTS[old_host]
    deadline = time.monotonic() + float(timeout)
    while True:
        events = read_log(log)
        after = [e for e in events if e[0] > t_kill]
        acks = [e for e in after if e[1] == "ok" and e[2] != old_ip]
        if acks or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    before = [e for e in events if e[0] <= t_kill and e[1] == "ok"]
    first_local = next((e for e in after if e[1] == "local"), None)
    res = dict(
        rto=round(acks[0][0] - t_kill, 3) if acks else None,
        addr=acks[0][2] if acks else None,
        last_ack_before_kill_s=round(t_kill - before[-1][0], 3) if before else None,
        errors_after_kill=sum(1 for e in after if e[1] == "err" and (not acks or e[0] < acks[0][0])),
        first_local_commit_s=round(first_local[0] - t_kill, 3) if first_local else None,
        local_commits=sum(1 for e in after if e[1] == "local"),
        waited_s=round(time.monotonic() - t_kill, 1),
    )
    print(json.dumps(res))
    return 0


# -- results -------------------------------------------------------------------------------------

def cmd_record(path, *pairs):
    row = {}
    for pair in pairs:
        key, _sep, value = pair.partition("=")
        try:
            row[key] = json.loads(value)
        except ValueError:
            row[key] = value
    with open(path, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
    return 0


def epoch(iso):
    iso = iso.replace("+00:00", "").replace("Z", "")
    return datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp()


def fmt(v):
    return "-" if v is None else "%.2f" % v


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def cmd_report(path, target):
    target = float(target)
    rows = [json.loads(line) for line in open(path) if line.strip()]
    variants = [("ours", "ours: `playbooks/failover.yml` (checks, fencing, promote, repoint, endpoint, record)"),
                ("reference", "reference: manual `SELECT pg_promote()` on the most advanced standby (no checks)")]
    print("| variant | runs | RTO min s | RTO median s | RTO max s | RTO per run s | no ack within timeout "
          "| action wall time median s |")
    print("|---|---|---|---|---|---|---|---|")
    medians = {}
    for key, label in variants:
        rs = [r for r in rows if r["variant"] == key]
        if not rs:
            continue
        rtos = [r["ack"]["rto"] for r in rs]
        ok = sorted(v for v in rtos if v is not None)
        missing = sum(1 for v in rtos if v is None)
        # A run without an acknowledged write counts as infinitely slow for the median.
        ranked = ok + [float("inf")] * missing
        m = statistics.median(ranked)
        medians[key] = m
        per_run = ", ".join("%.2f" % v if v is not None else "none" for v in rtos)
        print("| %s | %d | %s | %s | %s | %s | %d | %s |" % (
            label, len(rs), fmt(ok[0]) if ok else "-", fmt(m) if m != float("inf") else "none",
            fmt(ok[-1]) if ok and not missing else ("none" if missing else "-"), per_run, missing,
            fmt(med(r.get("action_wall") for r in rs))))
    print()
    print("Action wall time: ours = `ansible-playbook playbooks/failover.yml` from launch to exit; reference = "
          "the `docker exec ... psql -c 'SELECT pg_promote()'` call (waits for the promotion, 60 s at most).")
    print()
    print("Per run:")
    print()
    print("| variant | round | old primary | promoted | RTO s | first probe ack on | probe errors before it "
          "| first commit left waiting for a sync standby s | notes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["variant"], r["round"], r["old"], r.get("new") or "-", fmt(r["ack"]["rto"]),
            r["ack"]["addr"] or "-", r["ack"]["errors_after_kill"], fmt(r["ack"]["first_local_commit_s"]),
            r.get("notes") or ""))
    ours = [r for r in rows if r["variant"] == "ours" and r.get("report")]
    if ours:
        print()
        print("### Per-step breakdown (ours, %d run%s: median, min, max)" % (len(ours), "" if len(ours) == 1 else "s"))
        print()
        names = []
        for r in ours:
            for s in r["report"]["steps"]:
                if s["step"] not in names:
                    names.append(s["step"])
        table = []  # (label, values, part of the RTO?)

        def per_run(fn):
            out = []
            for r in ours:
                try:
                    out.append(fn(r))
                except (KeyError, TypeError, ValueError, StopIteration):
                    out.append(None)
            return out

        def step(name):
            return lambda r: next(s["seconds"] for s in r["report"]["steps"] if s["step"] == name)

        def t0(r):
            return epoch(r["report"]["started_at"])

        table.append(("kill → `ansible-playbook` launched", per_run(lambda r: r["launch_real"] - r["t_kill_real"]), True))
        table.append(("Ansible start-up: launch → first task (inventory, plugins, docker connection)",
                      per_run(lambda r: t0(r) - r["launch_real"]), True))
        for name in names:
            table.append(("step: %s" % name, per_run(step(name)), name in ("preflight and decision", "fence", "promote")))
        table.append(("after the last mark: verify streaming, record in the DR schema (up to `seconds_total`)",
                      per_run(lambda r: r["report"]["seconds_total"] - sum(s["seconds"] for s in r["report"]["steps"])),
                      False))
        table.append(("after `seconds_total`: JSON report, SNS notify, summary, Ansible exit",
                      per_run(lambda r: r["launch_real"] + r["action_wall"] - t0(r) - r["report"]["seconds_total"]),
                      False))
        table.append(("client: new primary writable (promote mark) → first probe ack",
                      per_run(lambda r: r["t_kill_real"] + r["ack"]["rto"] - t0(r)
                              - r["report"]["seconds_to_writable"]), True))
        print("| part | median s | min s | max s | on the RTO path |")
        print("|---|---|---|---|---|")
        for label, values, on_path in table:
            vs = [v for v in values if v is not None]
            print("| %s | %s | %s | %s | %s |" % (
                label, fmt(med(vs)), fmt(min(vs)) if vs else "-", fmt(max(vs)) if vs else "-",
                "yes" if on_path else "no"))
        print("| **RTO** (kill → first acknowledged probe write) | %s | | | |"
              % fmt(med(r["ack"]["rto"] for r in ours)))
        print("| report `seconds_to_writable` (first task → promote mark) | %s | | | |"
              % fmt(med(r["report"]["seconds_to_writable"] for r in ours)))
        print("| report `seconds_total` (first task → record written) | %s | | | |"
              % fmt(med(r["report"]["seconds_total"] for r in ours)))
        overhead = [r["action_wall"] - r["report"]["seconds_total"] for r in ours]
        print("| Ansible overhead = playbook wall − `seconds_total` | %s | %s | %s | |"
              % (fmt(med(overhead)), fmt(min(overhead)), fmt(max(overhead))))
        print("| playbook wall time | %s | | | |" % fmt(med(r["action_wall"] for r in ours)))
    print()
    if "ours" in medians:
        m = medians["ours"]
        print("**Target median RTO ≤ %g s (ours): %s** (median %s s%s)." % (
            target, "met" if m <= target else "missed", fmt(m) if m != float("inf") else "none",
            "; reference median %s s" % (
                fmt(medians["reference"]) if medians["reference"] != float("inf") else "none")
            if "reference" in medians else ""))
    return 0


def main(argv):
    commands = {
        "setup": (cmd_setup, 0), "health": (cmd_health, 0), "state": (cmd_state, 0),
        "best-standby": (cmd_best_standby, 1), "write": (cmd_write, 1), "wait-acks": (cmd_wait_acks, 3),
        "kill": (cmd_kill, 1), "wait-ack": (cmd_wait_ack, 4), "report": (cmd_report, 2),
    }
    if len(argv) >= 2 and argv[0] == "record":
        return cmd_record(*argv[1:])
    if not argv or argv[0] not in commands or len(argv) - 1 != commands[argv[0]][1]:
        sys.stderr.write(__doc__)
        return 2
    return commands[argv[0]][0](*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
