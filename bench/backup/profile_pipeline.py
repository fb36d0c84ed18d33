# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""CPU profile of the physical backup pipeline (dev tool; no Docker, no Ansible).

Runs the real code of ``rtx.dr.pg_basebackup`` (:class:`BackupRun` of
``plugins/module_utils/backup.py``: ``pg_basebackup -Ft -D -`` -> reader/tar
observer -> compressor thread -> SHA256 + S3 part uploads -> catalog) against a
throwaway local PostgreSQL (15 by default, started as in ``tests/unit/conftest.py``,
as ``nobody`` when run as root) and a local ``moto_server`` on loopback (started as in
``tests/unit/moto_server.py``), next to stripped baselines, and prints per variant:

- wall seconds, CPU seconds of this Python process split by thread (``main``: pipe
  reader + tar observer; ``compress``: compressor thread incl. SHA256 and the copy into
  the part buffer; ``upload``: the per-part upload threads, i.e. botocore: signing,
  checksums, HTTP; ``self-other``: the rest of the process: catalog, preflight, zstd's
  own worker threads), CPU seconds of the ``pg_basebackup`` child, of the PostgreSQL
  server (walsender: reading files, manifest checksums) and of moto; for ``ours-*`` also
  the wall seconds spent in each S3 API call (parts, complete, the sha256 tag);
  the peak RSS (VmHWM) of this process, harness included (~70 MB before any backup);
- with ``--profile``: the top functions by own time (cProfile in every Python thread
  of the pipeline, merged). cProfile slows the Python parts down: use the CPU numbers
  of a run without it.

Variants (``--variants``, comma separated):

- ``pgbb-null``: ``pg_basebackup ... > /dev/null`` (same argv as the module): the floor.
- ``pgbb-lz4cli``: ``pg_basebackup ... | lz4 -1 > /dev/null``: the same bytes compressed by
  the C ``lz4`` CLI, no hashing, no S3 (skipped when ``lz4`` is not on PATH).
- ``pipe-lz4`` / ``pipe-zstd``: our reader, tar observer, compressor thread and
  :class:`StreamUploader` (SHA256, part buffer) with a client stub that drops the parts
  (no HTTP): the Python pipeline without botocore and moto.
- ``ours-lz4`` / ``ours-zstd``: the whole :meth:`BackupRun.run` into moto, SSE-KMS
  (as the benchmark's ``ours-lz4``/``ours-zstd``; the module's Ansible start-up is not in).

The data directory (``--datadir``, default ``/tmp/rtxdr-profile``) is kept between
invocations (``pgbench -i -s SCALE`` plus ``--random-mb`` MB of random ``bytea`` so that
compression is not trivial); ``--fresh`` rebuilds it. Each backup's objects are deleted
from moto after its run (outside the timing). Example::

    .venv/bin/python bench/backup/profile_pipeline.py --runs 3
    .venv/bin/python bench/backup/profile_pipeline.py --variants ours-lz4 --profile --top 25

What it showed on the 2-core lab VM (463 MB of tar, lz4 -> 146 MB, 8 runs each, CPU seconds): this process
0.77 -> 0.65 after the botocore body copies and the redundant CRC32 went (main 0.21 -> 0.18, compress 0.34 ->
0.33, upload 0.21 -> 0.13), against pg_basebackup 0.44, the PostgreSQL walsender 0.49 (~0.3 of it the SHA256
manifest checksums: to /dev/null the server took 0.55 with SHA256, 0.25 with ``--manifest-checksums=CRC32C``)
and moto 1.7. The C ``lz4`` CLI alone spends 0.57 s on the same bytes, so the Python layer is not the cost.
Of ~3.3 s of wall time, ~1.35 s were the serial tail in moto: ``complete_multipart_upload`` (~0.6 s) and the
self-copy that stored the ``sha256`` metadata (~0.75 s); the sha256 is a tag of the multipart object since
(``put_object_tagging``, no copy).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import pwd
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))

# conftest makes ansible_collections.rtx.dr importable from the checkout (any path) and has the
# PostgreSQL helpers of the unit tests; moto_server starts moto like the unit tests do.
import conftest  # noqa: E402 pylint: disable=wrong-import-position
import moto_server  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import backup as backup_mod  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_compressor  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import StreamUploader  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarObserver  # noqa: E402 pylint: disable=wrong-import-position

CLK = os.sysconf("SC_CLK_TCK")
ALL_VARIANTS = ("pgbb-null", "pgbb-lz4cli", "pipe-lz4", "pipe-zstd", "ours-lz4", "ours-zstd")


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------

def proc_cpu(pid, children=True):
    """utime+stime (+ waited-for children's) of ``pid`` in seconds, or 0.0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK


def server_cpu(postmaster_pid):
    """CPU of the PostgreSQL server: the postmaster, its reaped children, and its live children."""
    total = proc_cpu(postmaster_pid)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster_pid:
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


def thread_kind(name):
    if name == "MainThread":
        return "main"
    if name.startswith("rtx-dr-compress"):
        return "compress"
    if "(_upload_part)" in name:
        return "upload"
    return "self-other"


class ThreadMeter:
    """CPU seconds per kind of thread, measured with ``time.thread_time()`` at the end of each thread.

    Patches ``threading.Thread.run`` while active; with ``profile`` every thread also runs under its
    own ``cProfile.Profile`` whose stats are merged at the end.
    """

    def __init__(self, profile=False):
        self.profile = profile
        self.cpu = {}
        self.profiles = []
        self._lock = threading.Lock()
        self._orig = None

    def _add(self, kind, seconds):
        with self._lock:
            self.cpu[kind] = self.cpu.get(kind, 0.0) + seconds

    def __enter__(self):
        meter = self
        self._orig = orig = threading.Thread.run

        def run(thread):
            start = time.thread_time()
            prof = cProfile.Profile() if meter.profile else None
            try:
                if prof is not None:
                    prof.runcall(orig, thread)
                else:
                    orig(thread)
            finally:
                meter._add(thread_kind(thread.name), time.thread_time() - start)
                if prof is not None:
                    with meter._lock:
                        meter.profiles.append(prof)

        threading.Thread.run = run
        return self

    def __exit__(self, *exc):
        threading.Thread.run = self._orig
        return False

    def stats(self, main_profile=None):
        out = io.StringIO()
        profiles = list(self.profiles) + ([main_profile] if main_profile else [])
        stats = pstats.Stats(profiles[0], stream=out)
        for prof in profiles[1:]:
            stats.add(prof)
        return stats, out


# --------------------------------------------------------------------------
# Environment: PostgreSQL and moto
# --------------------------------------------------------------------------

class Env:
    def __init__(self, args):
        self.args = args
        self.bindir = args.pg_bin
        self.base = args.datadir
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        self.cluster = None
        self.moto = None
        self.moto_url = None
        self.s3 = None
        self.bucket = None
        self.key_arn = None

    def start(self):
        args = self.args
        if args.fresh and os.path.isdir(self.base):
            shutil.rmtree(self.base)
        new = not os.path.isdir(os.path.join(self.base, "primary"))
        os.makedirs(self.base, exist_ok=True)
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.cluster = conftest.PgCluster(self.bindir, self.base, self.user)
        cluster = self.cluster
        if new:
            pwfile = os.path.join(self.base, "pwfile")
            with open(pwfile, "w", encoding="utf-8") as handle:
                handle.write(conftest.PG_PASSWORD + "\n")
            if self.user is not None:
                os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
            cluster.run("initdb", "-D", cluster.primary_dir, "-U", "postgres", "--pwfile", pwfile,
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        cluster.start(cluster.primary_dir, cluster.primary_port,
                      "-c cluster_name=rtxprofile -c shared_buffers=128MB -c max_wal_size=2GB")
        if new:
            self._load()
        print("# PostgreSQL %s on port %d, data %s, %.0f MB" % (
            cluster.sql(cluster.primary_port, "SHOW server_version")[0], cluster.primary_port, cluster.primary_dir,
            float(cluster.sql(cluster.primary_port, "SELECT sum(pg_database_size(oid)) FROM pg_database")[0]) / 1e6))
        self.moto, self.moto_url = moto_server.start_moto_server()
        setup = moto_server.encrypted_bucket_and_key(self.moto_url, "rtx-profile")
        self.s3, self.bucket, self.key_arn = setup["s3"], setup["bucket"], setup["arn"]
        print("# moto %s (pid %d), bucket %s" % (self.moto_url, self.moto.pid, self.bucket))

    def _load(self):
        cluster = self.cluster
        port = cluster.primary_port
        print("# loading pgbench -i -s %d and %d MB of random bytea ..." % (self.args.scale, self.args.random_mb))
        cluster.run("pgbench", "-i", "-q", "-s", str(self.args.scale), "-h", "127.0.0.1", "-p", str(port),
                    "-U", "postgres", "postgres", timeout=1800)
        import psycopg2  # pylint: disable=import-outside-toplevel

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=conftest.PG_PASSWORD,
                                dbname="postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE random_blobs (id int PRIMARY KEY, data bytea)")
                # EXTERNAL: stored out of line, uncompressed (random bytes would not compress anyway).
                cur.execute("ALTER TABLE random_blobs ALTER COLUMN data SET STORAGE EXTERNAL")
                for i in range(self.args.random_mb):
                    cur.execute("INSERT INTO random_blobs VALUES (%s, %s)", (i, os.urandom(1024 * 1024)))
            conn.commit()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CHECKPOINT")
        finally:
            conn.close()

    def postmaster_pid(self):
        with open(os.path.join(self.cluster.primary_dir, "postmaster.pid"), encoding="ascii") as handle:
            return int(handle.readline())

    def params(self, compression):
        cluster = self.cluster
        params = {name: option.get("default") for name, option in backup_mod.backup_argument_spec().items()}
        params.update(cluster.params())
        params.update(moto_server.AWS_TEST_PARAMS)
        params.update(endpoint_url=self.moto_url, bucket=self.bucket, kms_key_id=self.key_arn,
                      compression=compression, pg_bin_dir=self.bindir, prefix="profile", progress_interval=0)
        return params

    def argv(self):
        binary = os.path.join(self.bindir, "pg_basebackup")
        return backup_mod.pg_basebackup_command(binary, self.params("none"), "profile")

    def clean_bucket(self):
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents") or ()]
            if keys:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def stop(self):
        if self.moto is not None:
            moto_server.stop_moto_server(self.moto)
        if self.cluster is not None:
            if self.args.fresh_teardown:
                self.cluster.teardown()
            else:
                self.cluster.stop(self.cluster.primary_dir)


# --------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------

class DropClient:
    """An S3 client stub for :class:`StreamUploader`: parts are dropped, nothing goes over HTTP."""

    def create_multipart_upload(self, **kwargs):  # pylint: disable=unused-argument
        return {"UploadId": "drop"}

    def upload_part(self, **kwargs):
        return {"ETag": '"%d"' % kwargs["PartNumber"]}

    def complete_multipart_upload(self, **kwargs):  # pylint: disable=unused-argument
        return {}

    def put_object_tagging(self, **kwargs):  # pylint: disable=unused-argument
        return {}

    def put_object(self, **kwargs):  # pylint: disable=unused-argument
        return {"ETag": '"x"'}

    def abort_multipart_upload(self, **kwargs):  # pylint: disable=unused-argument
        return {}


def prepare_shell(env, tail):
    """A callable running ``pg_basebackup ... <tail>`` through /bin/sh."""
    argv = " ".join("'%s'" % a for a in env.argv())
    cmd = "%s %s" % (argv, tail)
    child_env = backup_mod.libpq_environment(env.params("none"))

    def run():
        subprocess.run(["/bin/sh", "-c", cmd], env=child_env, check=True, stderr=subprocess.DEVNULL)
        return {}

    return run


def prepare_pipe(env, method):
    """A callable running our pipeline (:func:`backup.stream_command`) into a :class:`DropClient`."""
    params = env.params(method)
    probe = backup_mod.BackupRun(params, s3=None)
    probe.validate()
    settings = probe.settings

    def run():
        compressor = new_compressor(settings["method"], settings["level"], settings["workers"])
        observer = TarObserver(keep_members=False)
        uploader = StreamUploader(DropClient(), "drop", "drop", part_size=16 * backup_mod.MIB)
        child = backup_mod.ChildProcess(env.argv(), backup_mod.libpq_environment(params))
        try:
            raw = backup_mod.stream_command(child, uploader, compressor, observer)
            child.finish()
        finally:
            child.close()
        observer.close()
        facts = uploader.close()
        return {"raw": raw, "stored": facts["size"]}

    return run


class TimedClient:
    """Proxy of a boto3 client that adds up the wall seconds spent in each API call (by operation)."""

    def __init__(self, client):
        self._client = client
        self.calls = {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_") or name in ("can_paginate", "get_paginator"):
            return attr

        def timed(*args, **kwargs):
            t0 = time.monotonic()
            try:
                return attr(*args, **kwargs)
            finally:
                with self._lock:
                    count, seconds = self.calls.get(name, (0, 0.0))
                    self.calls[name] = (count + 1, seconds + time.monotonic() - t0)

        return timed


def prepare_ours(env, method):
    """A callable running :meth:`BackupRun.run` into moto (clients built and preflight done beforehand)."""
    params = env.params(method)
    s3 = TimedClient(boto3_client(params, "s3"))
    kms = boto3_client(params, "kms")
    backup = backup_mod.BackupRun(params, s3=s3, kms=kms)
    backup.preflight()
    s3.calls.clear()

    def run():
        record = backup.run()
        return {"raw": record["size_raw_bytes"], "stored": record["size_compressed_bytes"],
                "tool_s": record["duration_seconds"],
                "s3_calls": {k: "%dx %.2fs" % (n, t) for k, (n, t) in sorted(s3.calls.items())}}

    return run


def run_variant(env, variant, profile=False):
    if variant == "pgbb-null":
        job = prepare_shell(env, "> /dev/null")
    elif variant == "pgbb-lz4cli":
        job = prepare_shell(env, "| lz4 -1 -q -c > /dev/null")
    elif variant.startswith("pipe-"):
        job = prepare_pipe(env, variant[5:])
    else:
        job = prepare_ours(env, variant[5:])
    postmaster = env.postmaster_pid()
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    child_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = server_cpu(postmaster)
    moto_before = proc_cpu(env.moto.pid, children=False)
    main_before = time.thread_time()
    main_prof = cProfile.Profile() if profile else None
    with ThreadMeter(profile) as meter:
        if main_prof is not None:
            main_prof.enable()
        t0 = time.monotonic()
        try:
            info = job()
        finally:
            wall = time.monotonic() - t0
            if main_prof is not None:
                main_prof.disable()
    main_cpu = time.thread_time() - main_before
    time.sleep(0.5)  # the walsender's CPU is counted once the postmaster has reaped it
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    child_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "variant": variant,
        "wall": wall,
        "self": (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime),
        "child": (child_after.ru_utime + child_after.ru_stime) - (child_before.ru_utime + child_before.ru_stime),
        "server": server_cpu(postmaster) - server_before,
        "moto": proc_cpu(env.moto.pid, children=False) - moto_before,
        "threads": dict(meter.cpu, main=main_cpu),
        "hwm_mb": _vm_hwm_mb(),
    }
    result["threads"]["self-other"] = max(0.0, result["self"] - sum(
        v for k, v in result["threads"].items() if k != "self-other"))
    result.update(info)
    if profile:
        stats, out = meter.stats(main_prof)
        stats.sort_stats("tottime").print_stats(env.args.top)
        result["profile"] = out.getvalue()
    env.clean_bucket()
    return result


def _vm_hwm_mb():
    with open("/proc/self/status", encoding="ascii") as handle:
        match = re.search(r"VmHWM:\s+(\d+) kB", handle.read())
    return int(match.group(1)) / 1024 if match else None


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

COLUMNS = ("wall", "self", "main", "compress", "upload", "self-other", "child", "server", "moto")


def fmt_row(name, values):
    cells = ["%6.2f" % values[c] if values.get(c) is not None else "     -" for c in COLUMNS]
    return "| %-12s | %s |" % (name, " | ".join(cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    parser.add_argument("--runs", type=int, default=1, help="runs per variant (medians are printed)")
    parser.add_argument("--profile", action="store_true", help="extra cProfile run per Python variant")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--scale", type=int, default=20, help="pgbench -i -s (new data directory only)")
    parser.add_argument("--random-mb", type=int, default=100, help="MB of random bytea (new data directory only)")
    parser.add_argument("--datadir", default="/tmp/rtxdr-profile")
    parser.add_argument("--fresh", action="store_true", help="rebuild the data directory")
    parser.add_argument("--fresh-teardown", action="store_true", help="remove the data directory at the end")
    parser.add_argument("--pg-bin", default=conftest.find_pg_bin() or "/usr/lib/postgresql/15/bin")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        if variant not in ALL_VARIANTS:
            parser.error("unknown variant %s" % variant)
    if "pgbb-lz4cli" in variants and not shutil.which("lz4"):
        print("# lz4 CLI not found: pgbb-lz4cli skipped")
        variants.remove("pgbb-lz4cli")
    env = Env(args)
    results = []
    profiles = []
    try:
        env.start()
        run_variant(env, "pgbb-null")  # warm the page cache
        for variant in variants:
            for _run in range(args.runs):
                result = run_variant(env, variant)
                results.append(result)
                print("# %-12s wall %.2f s, self CPU %.2f s %s, pg_basebackup %.2f, server %.2f, moto %.2f%s" % (
                    variant, result["wall"], result["self"],
                    {k: round(v, 2) for k, v in sorted(result["threads"].items())}, result["child"],
                    result["server"], result["moto"],
                    ", raw %.0f MB -> %.0f MB" % (result["raw"] / 1e6, result["stored"] / 1e6)
                    if result.get("raw") else ""), flush=True)
                if result.get("s3_calls"):
                    print("#   S3 calls (wall): %s" % result["s3_calls"], flush=True)
        if args.profile:
            for variant in variants:
                if variant.startswith(("pipe-", "ours-")):
                    profiles.append(run_variant(env, variant, profile=True))
    finally:
        env.stop()
    print()
    print("CPU and wall seconds, median of %d run(s); self = this Python process (main + compress + upload + "
          "self-other), child = pg_basebackup, server = PostgreSQL, moto = moto_server" % args.runs)
    print()
    print("| variant      | %s |" % " | ".join("%6s" % c[:6] for c in COLUMNS))
    print("|---|%s" % ("---|" * len(COLUMNS)))
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        flat = [dict(r, **r["threads"]) for r in rows]
        merged = {c: statistics.median([f.get(c) or 0.0 for f in flat]) for c in COLUMNS}
        if variant.startswith("pgbb"):
            for column in ("self", "main", "compress", "upload", "self-other"):
                merged[column] = None
        print(fmt_row(variant, merged))
    print()
    print("peak RSS of this process (harness + pipeline, VmHWM): %.0f MB" % max(r["hwm_mb"] for r in results))
    for result in profiles:
        print()
        print("## cProfile %s (all pipeline threads merged; wall %.2f s under the profiler)" % (
            result["variant"], result["wall"]))
        print(result["profile"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([dict(r, profile=None) for r in results + profiles], handle, indent=1)


if __name__ == "__main__":
    main()
