"""Region failover RTO in the lab: playbooks/region_failover.yml against the seed's manual procedure.

    python3 bench/region/region.py ROUNDS OUT.jsonl     run ROUNDS rounds of each tool, alternating
    python3 bench/region/region.py report OUT.jsonl     markdown table of the rounds

One round: the lab's east region (db-east-1..3, app-east-1) is stopped with `docker stop`, then
  ours       ansible-playbook playbooks/region_failover.yml -e region_target=west -e region_confirm=west
  reference  the seed's three commands, scripted without any check: Route53 UPSERT of the database and
             application records (boto3, no wait), `SELECT pg_promote()` on db-west-1, `systemctl restart
             rtx-demo-app` on app-west-1
RTO = from the start of the tool (playbook or first command) to the first row the west demo service
(app-west-1) commits on db-west-1 (demo.orders.created_at, the server's clock = this machine's clock).
After each round the lab is put back with playbooks/region_failback.yml (not timed).
"""

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(REPO, "inventories", "lab")
EAST = ["db-east-1", "db-east-2", "db-east-3", "app-east-1"]
ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
           ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".lab", "collections"),
           PATH=os.path.join(REPO, ".venv", "bin") + os.pathsep + os.environ.get("PATH", ""))
AWS = dict(endpoint_url="http://172.30.77.1:5000", region_name="us-east-1", aws_access_key_id="lab-access-key",
           aws_secret_access_key="lab-secret-key")
TARGET_S = 60.0


def run(argv, timeout=900):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=ENV, cwd=REPO)


def psql(host, sql):
    r = run(["docker", "exec", "-u", "postgres", host, "psql", "-XAtq", "-d", "rtx", "-c", sql], timeout=30)
    return r.stdout.strip() if r.returncode == 0 else None


def playbook(name, *extra):
    return run(["ansible-playbook", "-i", INVENTORY, os.path.join(REPO, "playbooks", name)] + list(extra), 1800)


def primary():
    return [h for h in ("db-east-1", "db-east-2", "db-east-3", "db-west-1") if psql(h, "SELECT pg_is_in_recovery()") == "f"]


def first_west_write_after(t0, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = psql("db-west-1", "SELECT extract(epoch FROM min(created_at)) FROM demo.orders WHERE host = 'app-west-1'"
                                " AND created_at > to_timestamp(%f)" % t0)
        if got:
            return float(got)
        time.sleep(0.2)
    return None


def reference():
    import boto3  # pylint: disable=import-outside-toplevel

    r53 = boto3.client("route53", **AWS)
    zone = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == "rtx-lab.internal."][0]["Id"]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 5,
                                                   "ResourceRecords": [{"Value": ip}]}}
        for name, ip in (("db.rtx-lab.internal", "172.30.77.21"), ("app.rtx-lab.internal", "172.30.77.41"))]})
    promote = run(["docker", "exec", "-u", "postgres", "db-west-1", "psql", "-XAtc", "SELECT pg_promote()"])
    restart = run(["docker", "exec", "app-west-1", "systemctl", "restart", "rtx-demo-app"])
    return promote.returncode == 0 and restart.returncode == 0, promote.stdout + promote.stderr + restart.stderr


def one_round(tool):
    if primary() != ["db-east-1"]:
        raise SystemExit("the lab must have db-east-1 as its only primary before a round (make lab)")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda h: run(["docker", "stop", "--time", "1", h]), EAST))
    t0 = time.time()
    if tool == "ours":
        result = playbook("region_failover.yml", "-e", "region_target=west", "-e", "region_confirm=west")
        ok, detail = result.returncode == 0, result.stdout[-1500:]
    else:
        ok, detail = reference()
    tool_seconds = time.time() - t0
    first = first_west_write_after(t0)
    rto = None if first is None else round(first - t0, 2)
    # Put the lab back (not timed).
    for host in EAST:
        run(["docker", "start", host])
    time.sleep(5)
    back = playbook("region_failback.yml", "-e", "region_target=east", "-e", "region_confirm=east")
    return {"tool": tool, "ok": ok, "rto_s": rto, "tool_s": round(tool_seconds, 2), "failback_ok": back.returncode == 0,
            "detail": "" if ok else detail[-800:], "failback_tail": "" if back.returncode == 0 else back.stdout[-800:]}


def report(path):
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    out = ["| round | tool | RTO (s): start -> first write of the west app | tool ran (s) | ok |",
           "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        out.append("| %d | %s | %s | %s | %s |" % (i, r["tool"], r["rto_s"], r["tool_s"], r["ok"]))
    out += ["", "| tool | runs | median RTO (s) | min | max | target |", "|---|---|---|---|---|---|"]
    for tool in ("ours", "reference"):
        rtos = [r["rto_s"] for r in rows if r["tool"] == tool and r["rto_s"] is not None]
        if rtos:
            out.append("| %s | %d | %.2f | %.2f | %.2f | %s |" % (
                "region_failover.yml" if tool == "ours" else "seed procedure (3 commands, no checks)", len(rtos),
                statistics.median(rtos), min(rtos), max(rtos),
                ("median <= %.0f s: %s" % (TARGET_S, "met" if statistics.median(rtos) <= TARGET_S else "MISSED"))
                if tool == "ours" else "-"))
    print("\n".join(out))


def main():
    if sys.argv[1] == "report":
        report(sys.argv[2])
        return
    rounds, path = int(sys.argv[1]), sys.argv[2]
    for _round in range(rounds):
        for tool in ("ours", "reference"):
            row = one_round(tool)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            if not row["failback_ok"]:
                raise SystemExit("failback failed; the lab needs attention:\n" + row["failback_tail"])
    report(path)


if __name__ == "__main__":
    main()
