"""Streaming-mode watcher of bench/wal/run.sh (host side, boto3 against the plain-HTTP moto endpoint).

Usage: python streamwatch.py ENDPOINT BUCKET PREFIX OUT.tsv [INTERVAL_S]
  every INTERVAL_S (default 0.5) until SIGTERM: the newest streamed partial under <PREFIX>/wal-stream/ (highest key)
  and its covers-lsn metadata (head_object), and the highest complete segment under <PREFIX>/wal/00000001/ (pushed by
  archive_command or by the stream uploader). One tab-separated line per sample:
  t_start  t_end  covers_lsn_bytes(-1: none)  partial_key_basename(-)  archived_max_segno(-1: none)  error(-)
  t_end (after the last response) is the time the sample stands for: S3 held at least this then.
"""
import re
import signal
import sys
import time

import boto3

endpoint, bucket, prefix, out_path = sys.argv[1:5]
interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
prefix = prefix.strip("/")
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
STREAM = prefix + "/wal-stream/"
WAL = prefix + "/wal/00000001/"
SEGMENT = re.compile(r"^([0-9A-F]{24})(?:\.(?:zst|lz4|gz|bz2))?$")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
signal.signal(signal.SIGINT, lambda *a: stop.append(1))


def parse_lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def newer_keys(pfx, after):
    kwargs = {"Bucket": bucket, "Prefix": pfx}
    if after:
        kwargs["StartAfter"] = after
    keys = []
    while True:
        page = s3.list_objects_v2(**kwargs)
        keys.extend(o["Key"] for o in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return keys
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


last_partial = None
last_wal = None
archived = -1
with open(out_path, "w", buffering=1) as out:
    while not stop:
        t0 = time.time()
        covers, err = -1, "-"
        try:
            keys = newer_keys(STREAM, last_partial)
            if keys:
                last_partial = max(keys)
            for key in newer_keys(WAL, last_wal):
                m = SEGMENT.match(key.rsplit("/", 1)[-1])
                if m:
                    last_wal = key if last_wal is None or key > last_wal else last_wal
                    name = m.group(1)
                    archived = max(archived, int(name[8:16], 16) * 256 + int(name[16:24], 16))
            if last_partial:
                meta = s3.head_object(Bucket=bucket, Key=last_partial).get("Metadata") or {}
                if meta.get("covers-lsn"):
                    covers = parse_lsn(meta["covers-lsn"])
        except Exception as exc:  # pylint: disable=broad-exception-caught
            err = type(exc).__name__
        t1 = time.time()
        out.write("%.3f\t%.3f\t%d\t%s\t%d\t%s\n" % (
            t0, t1, covers, last_partial.rsplit("/", 1)[-1] if last_partial else "-", archived, err))
        time.sleep(max(0.05, interval - (time.time() - t0)))
