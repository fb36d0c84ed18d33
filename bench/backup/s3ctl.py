"""S3/KMS helper of bench/backup/run.sh (host side, boto3 against the moto endpoint).

Usage: python s3ctl.py ENDPOINT setup BUCKET KMS_ALIAS
       python s3ctl.py ENDPOINT catalog BUCKET PREFIX BACKUP_ID   -> JSON of the catalog record
       python s3ctl.py ENDPOINT size BUCKET PREFIX                -> bytes stored under PREFIX
       python s3ctl.py ENDPOINT rm BUCKET PREFIX                  -> deletes everything under PREFIX
"""
import json
import sys

import boto3

endpoint, action, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
s3 = boto3.client("s3", **kw)


def keys(prefix):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


if action == "setup":
    alias = args[0]
    s3.create_bucket(Bucket=bucket)
    kms = boto3.client("kms", **kw)
    key = kms.create_key(Description="rtx.dr backup benchmark")["KeyMetadata"]
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    # Default SSE-KMS, as rtx.dr.s3_storage sets a backup bucket up (pg_basebackup refuses others).
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["Arn"]}}]})
    print(key["Arn"])
elif action == "catalog":
    prefix, backup_id = args
    body = s3.get_object(Bucket=bucket, Key="%s/catalog/%s.json" % (prefix, backup_id))["Body"].read()
    print(json.dumps(json.loads(body)))
elif action == "size":
    print(sum(obj["Size"] for obj in keys(args[0])))
elif action == "rm":
    batch = []
    for obj in keys(args[0]):
        batch.append({"Key": obj["Key"]})
        if len(batch) == 1000:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch})
            batch = []
    if batch:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": batch})
    for up in s3.list_multipart_uploads(Bucket=bucket, Prefix=args[0]).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
else:
    sys.exit("unknown action %s" % action)
