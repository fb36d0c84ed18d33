"""S3 helper of bench/wal/run.sh (host side, boto3 against the plain-HTTP moto endpoint).

Usage: python s3list.py ENDPOINT BUCKET PREFIX
  prints one line per WAL segment object under PREFIX: "<24-hex segment name>\t<key>\t<size>"
  (ours: <prefix>/wal/<TLI>/<segment>.zst; pgBackRest: <repo>/archive/<stanza>/<ver>-<n>/<TLI+log>/<segment>-<sha1>.zst)
"""
import re
import sys

import boto3

endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
SEGMENT = re.compile(r"^([0-9A-F]{24})(?:-[0-9a-f]{40})?(?:\.(?:zst|lz4|gz|bz2))?$")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for obj in page.get("Contents", []):
        match = SEGMENT.match(obj["Key"].rsplit("/", 1)[-1])
        if match:
            print("%s\t%s\t%d" % (match.group(1), obj["Key"], obj["Size"]))
