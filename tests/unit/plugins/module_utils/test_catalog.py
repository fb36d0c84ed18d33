# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import datetime
import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position

UTC = datetime.timezone.utc


def test_backup_id_format_and_order():
    when = datetime.datetime(2026, 11, 27, 3, 15, 0, 123456, tzinfo=UTC)
    assert catalog.new_backup_id("physical", when) == "20261127T031500.123Z-F"
    assert catalog.new_backup_id("logical", when) == "20261127T031500.123Z-L"
    assert catalog.parse_backup_id("20261127T031500.123Z-F") == (when.replace(microsecond=123000), "physical")
    assert catalog.parse_backup_id("20261127T031500Z-L")[1] == "logical"
    ids = [catalog.new_backup_id("physical", when + datetime.timedelta(milliseconds=ms))
           for ms in (0, 1, 999, 1000, 86400000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # a naive datetime is UTC; an aware one in another zone is converted
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert catalog.new_backup_id("physical", when.astimezone(cet)) == "20261127T031500.123Z-F"
    for bad in ("", "20261127T031500Z", "20261127T031500Z-X", "../x"):
        with pytest.raises(InvalidValueError):
            catalog.parse_backup_id(bad)
    with pytest.raises(InvalidValueError):
        catalog.new_backup_id("wal")


def test_keys():
    assert catalog.catalog_key("/pgbackup/main/", "I") == "pgbackup/main/catalog/I.json"
    assert catalog.data_prefix("pgbackup/main", "physical", "I") == "pgbackup/main/base/I/"
    assert catalog.data_prefix("pgbackup/main", "logical") == "pgbackup/main/logical/"
    bid = "20261127T031500.123Z-F"
    assert catalog.backup_id_from_key("p", "p/base/%s/base.tar.zst" % bid) == bid
    assert catalog.backup_id_from_key("p", "p/base/junk/base.tar") is None
    assert catalog.backup_id_from_key("p", "q/base/%s/x" % bid) is None


def record(backup_id, status, kind="physical"):
    return {"format_version": 1, "backup_id": backup_id, "kind": kind, "status": status}


def test_write_read_list_latest(s3_client, bucket, kms_key):
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key["alias"]}
    base = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    ids = {}
    plan = [("physical", "complete"), ("logical", "complete"), ("physical", "failed"),
            ("physical", "complete"), ("physical", "running"), ("logical", "failed")]
    for n, (kind, status) in enumerate(plan):
        bid = catalog.new_backup_id(kind, base + datetime.timedelta(hours=n))
        ids[n] = bid
        key = catalog.write_record(s3_client, bucket, "pg/main", record(bid, status, kind), sse)
        assert key == "pg/main/catalog/%s.json" % bid
    # unrelated objects under catalog/ are ignored
    s3_client.put_object(Bucket=bucket, Key="pg/main/catalog/README.txt", Body=b"x")

    head = s3_client.head_object(Bucket=bucket, Key=catalog.catalog_key("pg/main", ids[0]))
    body = s3_client.get_object(Bucket=bucket, Key=catalog.catalog_key("pg/main", ids[0]))["Body"].read()
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert head["Metadata"]["backup-id"] == ids[0]

    assert catalog.read_record(s3_client, bucket, "pg/main", ids[3])["status"] == "complete"
    assert catalog.read_record(s3_client, bucket, "pg/main", "20200101T000000.000Z-F") is None

    everything = catalog.list_records(s3_client, bucket, "pg/main")
    assert [r["backup_id"] for r in everything] == [ids[n] for n in (5, 4, 3, 2, 1, 0)]
    physical = catalog.list_records(s3_client, bucket, "pg/main", kind="physical")
    assert [r["backup_id"] for r in physical] == [ids[n] for n in (4, 3, 2, 0)]
    done = catalog.list_records(s3_client, bucket, "pg/main", kind="physical", status="complete")
    assert [r["backup_id"] for r in done] == [ids[3], ids[0]]
    assert catalog.latest_complete(s3_client, bucket, "pg/main")["backup_id"] == ids[3]
    assert catalog.latest_complete(s3_client, bucket, "pg/main", kind="logical")["backup_id"] == ids[1]
    assert catalog.latest_complete(s3_client, bucket, "other") is None

    # overwrite: running -> complete
    rec = record(ids[4], "complete")
    catalog.write_record(s3_client, bucket, "pg/main", rec, sse)
    assert catalog.latest_complete(s3_client, bucket, "pg/main")["backup_id"] == ids[4]
    with pytest.raises(InvalidValueError):
        catalog.write_record(s3_client, bucket, "pg/main", record(ids[4], "bogus"), sse)


# --------------------------------------------------------------------------
# Lenient ISO 8601 times (parse_iso_time / parse_time)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "2026-11-27T03:15:00Z", "2026-11-27T03:15:00z", "  2026-11-27 03:15:00Z ", "2026-11-27 03:15:00 UTC",
    "2026-11-27 03:15:00+00", "2026-11-27T03:15:00+00:00", "2026-11-27 08:45:00+05:30", "2026-11-27 08:45:00+0530",
    "2026-11-26 22:15:00-05", "2026-11-27 03:15:00",
])
def test_parse_time_spellings_all_name_the_same_instant_in_utc(text):
    when = catalog.parse_time(text)
    assert when == datetime.datetime(2026, 11, 27, 3, 15, tzinfo=UTC)
    assert when.tzinfo is UTC


def test_parse_time_of_datetimes_empty_values_and_dates():
    naive = datetime.datetime(2026, 11, 27, 3, 15)
    plus_one = datetime.datetime(2026, 11, 27, 4, 15, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert catalog.parse_time(naive) == naive.replace(tzinfo=UTC)
    assert catalog.parse_time(plus_one).tzinfo is UTC and catalog.parse_time(plus_one).hour == 3
    assert catalog.parse_time(plus_one, keep_offset=True) is plus_one
    assert catalog.parse_time(naive, keep_offset=True).tzinfo is UTC
    assert catalog.parse_time("2026-11-27 08:45:00+05:30", keep_offset=True).utcoffset() == datetime.timedelta(
        hours=5, minutes=30)
    for empty in (None, "", "   "):
        assert catalog.parse_time(empty) is None
    # A bare date is midnight (UTC): its "-27" is not taken for an offset of hours.
    assert catalog.parse_time("2026-11-27") == datetime.datetime(2026, 11, 27, tzinfo=UTC)
    assert catalog.parse_time(datetime.date(2026, 11, 27)) == datetime.datetime(2026, 11, 27, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-27 03:15:00+00", "2026-11-27 25:00:00Z", "not a time+00"])
def test_parse_time_refuses_what_is_not_a_time(text):
    with pytest.raises(ValueError):
        catalog.parse_time(text)


def test_parse_iso_time_keeps_what_was_written():
    assert catalog.parse_iso_time("2026-11-27 03:15:00").tzinfo is None
    assert catalog.parse_iso_time("2026-11-27 08:45:00+0530").utcoffset() == datetime.timedelta(hours=5, minutes=30)
    assert catalog.parse_iso_time("2026-11-27 15:40:01.5-05").utcoffset() == datetime.timedelta(hours=-5)
    assert catalog.parse_iso_time("2026-11-27 15:40:01.123456 UTC").microsecond == 123456
    assert catalog.parse_isoformat(None) is None
    assert catalog.parse_isoformat("2026-11-27T03:15:00.123456Z") == datetime.datetime(
        2026, 11, 27, 3, 15, 0, 123456, tzinfo=UTC)
    assert catalog.parse_isoformat("2026-11-27T03:15:00").tzinfo is None
