# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of module_utils/restore.py: pure helpers, and plans/downloads/restores of synthetic backups in moto."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import restore  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walchain  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import EXTENSIONS  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_compressor  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.restore import RestoreError  # noqa: E402 pylint: disable=wrong-import-position

UTC = datetime.timezone.utc
PREFIX = "pgbackup/restoretest"
RESTORE_ID = "R20261127T120000.000Z"
B_OLD = "20261127T080000.000Z-F"
B_NEW = "20261127T100000.000Z-F"


def at(hour, minute=0, second=0):
    return datetime.datetime(2026, 11, 27, hour, minute, second, tzinfo=UTC)


def seg(timeline, segno):
    return walchain.segment_name(timeline, segno)


# --------------------------------------------------------------------------
# Synthetic catalog, archive and backups
# --------------------------------------------------------------------------


def rec(backup_id, timeline=1, stop_lsn="0/3000138", finished_at=None, status="complete", kind=None, **extra):
    """A catalog record like rtx.dr.pg_basebackup writes (only what a restore reads)."""
    when, id_kind = catalog.parse_backup_id(backup_id)
    record = {
        "format_version": 1, "backup_id": backup_id, "kind": kind or id_kind, "status": status,
        "timeline": timeline, "start_lsn": stop_lsn, "stop_lsn": stop_lsn,
        "started_at": catalog.isoformat(when),
        "finished_at": finished_at if finished_at is not None else catalog.isoformat(
            when + datetime.timedelta(seconds=5)),
        "objects": [], "compression": {"method": "none"}, "size_raw_bytes": 0,
        "pg_version": {"server_version_num": 150004, "server_version": "15.4"},
    }
    record.update(extra)
    return record


def wal_key(timeline, segno):
    return "%s/wal/%08X/%s.zst" % (PREFIX, timeline, seg(timeline, segno))


def put_wal(s3, bucket_name, timeline, segno):
    key = wal_key(timeline, segno)
    s3.put_object(Bucket=bucket_name, Key=key, Body=b"wal %d %d" % (timeline, segno))
    return key


def put_history(s3, bucket_name, timeline, text):
    s3.put_object(Bucket=bucket_name, Key="%s/wal/%08X.history" % (PREFIX, timeline), Body=text.encode())


class TimedS3:
    """The moto client with ``LastModified`` of chosen keys replaced (moto stores whole seconds of now)."""

    def __init__(self, client, times=None):
        self._client = client
        self.times = dict(times or {})

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_paginator(self, operation):
        paginator = self._client.get_paginator(operation)
        if operation != "list_objects_v2":
            return paginator
        times = self.times

        class _Paginator:  # pylint: disable=too-few-public-methods
            def paginate(self, **kwargs):
                for page in paginator.paginate(**kwargs):
                    for item in page.get("Contents") or ():
                        if item["Key"] in times:
                            item["LastModified"] = times[item["Key"]]
                    yield page

        return _Paginator()


#: When each segment of timeline 1 of the standard archive was archived.
ARCHIVED_AT = {1: at(8, 10), 2: at(8, 40), 3: at(10, 0, 10), 4: at(10, 20), 5: at(10, 40), 6: at(11), 7: at(11, 20)}


def standard_archive(s3, bucket_name):
    """Two backups on timeline 1 (B_OLD stops in segment 1, B_NEW in segment 3) and segments 1..7 archived."""
    for record in (
        rec(B_OLD, stop_lsn="0/1000100"),
        rec(B_NEW, stop_lsn="0/3000138"),
        rec("20261127T110000.000Z-F", stop_lsn=None, status="failed", finished_at=catalog.isoformat(at(11, 0, 5))),
        rec("20261127T103000.000Z-L", stop_lsn=None, timeline=None),
    ):
        catalog.write_record(s3, bucket_name, PREFIX, record)
    times = {}
    for segno, when in ARCHIVED_AT.items():
        times[put_wal(s3, bucket_name, 1, segno)] = when
    return TimedS3(s3, times)


def plan_params(aws, bucket_name, **overrides):
    params = dict(aws)
    params.update(bucket=bucket_name, prefix=PREFIX, cluster_name=None, backup_id=None, target_timeline="latest",
                  wal_segment_size=16 * 1024 * 1024)
    params.update(overrides)
    return params


def plan(s3, aws, bucket_name, target="latest", value=None, **overrides):
    params = plan_params(aws, bucket_name, target=target, target_value=value, **overrides)
    return restore.plan_restore(s3, params, restore.parse_target(params))


def make_tar(files=None, dirs=(), symlinks=None, hardlinks=None, fifos=(), mode=0o644):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        for name, target in (hardlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE
            info.linkname = target
            tar.addfile(info)
        for name in fifos:
            info = tarfile.TarInfo(name)
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    return buf.getvalue()


def compress(method, data):
    comp = new_compressor(method)
    return comp.compress(data) + comp.flush()


MANIFEST = b'{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [],\n"Manifest-Checksum": "00"}\n'
DATA_FILES = {
    "PG_VERSION": b"15\n",
    "backup_label": b"START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n",
    "global/pg_control": b"c" * 8192,
    "base/1/1259": bytes(range(256)) * 40,
    "postgresql.auto.conf": b"# Do not edit this file manually!\nwork_mem = '8MB'\n",
    # files a base backup may carry that must not survive into the restored directory
    "standby.signal": b"",
    "postmaster.opts": b"/usr/lib/postgresql/15/bin/postgres\n",
}


def put_backup(s3, bucket_name, backup_id=B_NEW, method="zstd", files=None, stop_lsn="0/3000138", **extra):
    """Upload a base tar + manifest like pg_basebackup's and write the complete record; returns the record."""
    files = DATA_FILES if files is None else files
    tar = make_tar(files, dirs=("base", "base/1", "global", "pg_wal"))
    body = compress(method, tar)
    base_key = catalog.data_prefix(PREFIX, "physical", backup_id) + "base.tar" + EXTENSIONS[method]
    manifest_key = catalog.data_prefix(PREFIX, "physical", backup_id) + "backup_manifest"
    s3.put_object(Bucket=bucket_name, Key=base_key, Body=body)
    s3.put_object(Bucket=bucket_name, Key=manifest_key, Body=MANIFEST)
    record = rec(backup_id, stop_lsn=stop_lsn, bucket=bucket_name,
                 compression={"method": method, "level": None, "workers": None},
                 size_raw_bytes=len(tar), size_compressed_bytes=len(body) + len(MANIFEST),
                 objects=[{"key": base_key, "role": "base", "size": len(body),
                           "sha256": hashlib.sha256(body).hexdigest()},
                          {"key": manifest_key, "role": "manifest", "size": len(MANIFEST),
                           "sha256": hashlib.sha256(MANIFEST).hexdigest()}])
    record.update(extra)
    catalog.write_record(s3, bucket_name, PREFIX, record)
    return record


def tree(root):
    """``{relative path: bytes or 'dir'}`` of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


# --------------------------------------------------------------------------
# Target parsing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2026-11-27 03:15:00+00", at(3, 15)),
    ("2026-11-27T03:15:00Z", at(3, 15)),
    ("2026-11-27 03:15:00.250+00:00", at(3, 15) + datetime.timedelta(milliseconds=250)),
    ("2026-11-27 08:45:00+0530", at(3, 15)),
    ("2026-11-27 08:45:00+05:30", at(3, 15)),
    ("2026-11-26 22:15:00-05", at(3, 15)),
    ("  2026-11-27T03:15:00Z  ", at(3, 15)),
])
def test_parse_time_with_zone(text, expected):
    when = restore.parse_time(text)
    assert when == expected
    assert when.utcoffset() is not None


def test_parse_time_keeps_the_given_offset():
    when = restore.parse_time("2026-11-27 08:45:00+0530")
    assert when.utcoffset() == datetime.timedelta(hours=5, minutes=30)


@pytest.mark.parametrize("text", ["2026-11-27 03:15:00", "2026-11-27T03:15:00.250", "", None, "yesterday"])
def test_parse_time_without_zone_is_refused(text):
    with pytest.raises(InvalidValueError) as info:
        restore.parse_time(text)
    assert "no time zone" in info.value.msg
    assert "+00" in info.value.hint


@pytest.mark.parametrize("text", ["2026-13-27 03:15:00+00", "2026-11-27 25:00:00Z", "not a time+00"])
def test_parse_time_not_a_time(text):
    with pytest.raises(InvalidValueError, match="not a time"):
        restore.parse_time(text)


@pytest.mark.parametrize("text", ["2026-11-27", "2026-11-27 03:15-27"])
def test_parse_time_a_date_is_not_a_zone(text):
    """The ``-27`` of a date must not pass for a zone: the result would be naive (server-local time)."""
    with pytest.raises(InvalidValueError):
        restore.parse_time(text)


def test_parse_target_latest_and_backup():
    for kind in ("latest", "backup"):
        target = restore.parse_target({"target": kind, "target_value": None})
        assert target == {"type": kind, "value": None, "inclusive": True, "time": None, "lsn": None}
        # blank values count as none
        assert restore.parse_target({"target": kind, "target_value": "  "})["value"] == ""
    assert restore.parse_target({})["type"] == "latest"


@pytest.mark.parametrize("kind", ["latest", "backup"])
def test_parse_target_value_refused_for_latest_and_backup(kind):
    with pytest.raises(InvalidValueError) as info:
        restore.parse_target({"target": kind, "target_value": "0/3000000"})
    assert "takes none" in info.value.msg and kind in info.value.msg


@pytest.mark.parametrize("kind, example", [("time", "+00"), ("lsn", "0/5000060"), ("xid", "745123"),
                                           ("name", "pg_create_restore_point")])
def test_parse_target_missing_value(kind, example):
    for value in (None, "", "   "):
        with pytest.raises(InvalidValueError) as info:
            restore.parse_target({"target": kind, "target_value": value})
        assert info.value.msg == "target=%s needs target_value" % kind
        assert example in info.value.hint


def test_parse_target_time():
    target = restore.parse_target({"target": "time", "target_value": " 2026-11-27 03:15:00+00 ",
                                   "target_inclusive": False})
    assert target["time"] == at(3, 15) and target["value"] == "2026-11-27T03:15:00+00:00"
    assert target["inclusive"] is False and target["lsn"] is None
    with pytest.raises(InvalidValueError, match="no time zone"):
        restore.parse_target({"target": "time", "target_value": "2026-11-27 03:15:00"})


def test_parse_target_lsn():
    target = restore.parse_target({"target": "lsn", "target_value": "0/05000060"})
    assert target["lsn"] == 0x5000060 and target["value"] == "0/5000060" and target["inclusive"] is True
    assert restore.parse_target({"target": "lsn", "target_value": "1/a"})["value"] == "1/A"
    for bad in ("5000060", "0/xyz", "0/5000060/1", "-1/0"):
        with pytest.raises(InvalidValueError, match="Invalid LSN"):
            restore.parse_target({"target": "lsn", "target_value": bad})


def test_parse_target_xid():
    assert restore.parse_target({"target": "xid", "target_value": "812"})["value"] == "812"
    assert restore.parse_target({"target": "xid", "target_value": 3})["value"] == "3"
    for bad in ("0", "2", "-5", "12a", "0x10", "1.5"):
        with pytest.raises(InvalidValueError, match="not a transaction id"):
            restore.parse_target({"target": "xid", "target_value": bad})


def test_parse_target_name():
    target = restore.parse_target({"target": "name", "target_value": " before-migration "})
    assert target["value"] == "before-migration" and target["time"] is None and target["lsn"] is None


@pytest.mark.parametrize("value, expected", [
    (None, "latest"), ("latest", "latest"), ("LATEST", "latest"), (" current ", "current"), ("1", 1), ("12", 12),
    (3, 3),
])
def test_parse_target_timeline(value, expected):
    assert restore.parse_target_timeline(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "0x2"])
def test_parse_target_timeline_errors(value):
    with pytest.raises(InvalidValueError, match="target_timeline"):
        restore.parse_target_timeline(value)


# --------------------------------------------------------------------------
# Recovery settings
# --------------------------------------------------------------------------

CMD = "fetch %f %p"


def settings_of(kind, value=None, inclusive=True, timeline="latest", action="pause"):
    target = restore.parse_target({"target": kind, "target_value": value, "target_inclusive": inclusive})
    return restore.recovery_settings(target, timeline, action, CMD)


def test_recovery_settings_latest_has_no_target_nor_action():
    assert settings_of("latest") == [("restore_command", CMD), ("recovery_target_timeline", "latest")]


def test_recovery_settings_backup_is_immediate():
    assert settings_of("backup", timeline=2) == [
        ("restore_command", CMD), ("recovery_target", "immediate"), ("recovery_target_timeline", "2"),
        ("recovery_target_action", "pause")]


def test_recovery_settings_time():
    settings = settings_of("time", "2026-11-27 08:45:00.5+0530", inclusive=False, action="promote")
    assert settings == [
        ("restore_command", CMD), ("recovery_target_time", "2026-11-27 08:45:00.500000+05:30"),
        ("recovery_target_inclusive", "off"), ("recovery_target_timeline", "latest"),
        ("recovery_target_action", "promote")]
    # what PostgreSQL reads back is the same instant
    assert restore.parse_time(dict(settings)["recovery_target_time"]) == at(3, 15) + datetime.timedelta(
        milliseconds=500)


def test_recovery_settings_lsn_and_xid_are_inclusive_by_default():
    assert settings_of("lsn", "0/5000060", timeline="current", action="shutdown") == [
        ("restore_command", CMD), ("recovery_target_lsn", "0/5000060"), ("recovery_target_inclusive", "on"),
        ("recovery_target_timeline", "current"), ("recovery_target_action", "shutdown")]
    assert settings_of("xid", "812") == [
        ("restore_command", CMD), ("recovery_target_xid", "812"), ("recovery_target_inclusive", "on"),
        ("recovery_target_timeline", "latest"), ("recovery_target_action", "pause")]


def test_recovery_settings_name_has_no_inclusive():
    settings = dict(settings_of("name", "before-migration", inclusive=False))
    assert settings["recovery_target_name"] == "before-migration"
    assert "recovery_target_inclusive" not in settings
    for kind in ("latest", "backup"):
        assert "recovery_target_inclusive" not in dict(settings_of(kind))


def test_only_one_recovery_target_per_kind():
    names = ("recovery_target", "recovery_target_time", "recovery_target_lsn", "recovery_target_xid",
             "recovery_target_name")
    for kind, value in (("backup", None), ("time", "2026-11-27 03:15:00Z"), ("lsn", "0/1"), ("xid", "5"),
                        ("name", "x")):
        assert len([n for n, _v in settings_of(kind, value) if n in names]) == 1, kind


@pytest.mark.parametrize("value, quoted", [
    ("plain", "'plain'"),
    ("", "''"),
    ("it's", "'it''s'"),
    ("C:\\wal\\%f", "'C:\\\\wal\\\\%f'"),
    ("a\\'b", "'a\\\\''b'"),
    (5499, "'5499'"),
])
def test_quote_setting(value, quoted):
    assert restore.quote_setting(value) == quoted


def test_auto_conf_block():
    block = restore.auto_conf_block(RESTORE_ID, B_NEW, [("restore_command", "cp '/a b/%f' %p"),
                                                        ("synchronous_standby_names", "")])
    assert block == (
        "\n# --- rtx.dr restore %s of backup %s (later lines override earlier ones) ---\n"
        "restore_command = 'cp ''/a b/%%f'' %%p'\n"
        "synchronous_standby_names = ''\n" % (RESTORE_ID, B_NEW))
    # appended to a file without a final newline, the block still starts on a line of its own
    assert ("work_mem = '8MB'" + block).splitlines()[1].startswith("# --- rtx.dr restore")


def test_restore_command_defaults_and_options():
    assert restore.restore_command({}) == (
        "PYTHONPATH=/usr/local/lib/rtx-dr /usr/bin/python3 -m ansible_collections.rtx.dr.plugins.module_utils."
        "wal_agent --config /etc/rtx-dr/agent.json fetch %f %p")
    cmd = restore.restore_command({"agent_path": "/opt/rtx", "agent_python": "/opt/py/bin/python",
                                   "agent_config": "/etc/x.json"})
    assert cmd.startswith("PYTHONPATH=/opt/rtx /opt/py/bin/python -m ") and cmd.endswith(
        "--config /etc/x.json fetch %f %p")
    # cross-region: the archive order of the fetch (docs/cross_region.md)
    assert restore.restore_command({"wal_fetch_order": "replica_only"}).endswith(
        "--config /etc/rtx-dr/agent.json fetch --order replica_only %f %p")


def test_new_restore_id():
    assert restore.new_restore_id(datetime.datetime(2026, 11, 27, 12, 0, 1, 234567, tzinfo=UTC)) == \
        "R20261127T120001.234Z"
    assert restore.new_restore_id().startswith("R2")


def test_parse_controldata_and_scratch_conf():
    data = restore.parse_controldata("pg_control version number:            1300\n"
                                     "max_connections setting:              250\n"
                                     "Database cluster state:               in production\nno colon here\n")
    assert data == {"pg_control version number": "1300", "max_connections setting": "250",
                    "Database cluster state": "in production"}
    conf = restore.scratch_conf(5499, "/d/it's", {"max_connections": "250"})
    assert "port = 5499\n" in conf and "listen_addresses = ''\n" in conf
    assert "unix_socket_directories = '/d/it''s'\n" in conf and "max_connections = 250\n" in conf
    assert "hba_file = '/d/it''s/pg_hba.conf'\n" in conf


def test_restore_argument_spec():
    spec = restore.restore_argument_spec()
    assert spec["target"]["choices"] == list(restore.TARGET_TYPES)
    assert spec["data_directory"]["required"] and spec["bucket"]["required"]
    assert {"region", "endpoint_url", "access_key"} <= set(spec)
    assert spec["archive_mode"].get("default") is None


# --------------------------------------------------------------------------
# Choosing the backup
# --------------------------------------------------------------------------

LSN_PATH_3 = walchain.timeline_path(3, [(1, parse_lsn("0/3000000"), ""), (2, parse_lsn("0/5000000"), "")])


def target_of(kind="latest", value=None):
    return restore.parse_target({"target": kind, "target_value": value})


def records_standard():
    return [
        rec("20261127T120000.000Z-F", status="running", stop_lsn=None, finished_at=""),
        rec("20261127T110000.000Z-F", status="failed", stop_lsn="0/7000000"),
        rec("20261127T103000.000Z-L", stop_lsn="0/6000000"),
        rec(B_NEW, stop_lsn="0/3000138"),
        rec("20261127T090000.000Z-F", status="deleting", stop_lsn="0/2000000"),
        rec(B_OLD, stop_lsn="0/1000100"),
    ]


def test_select_latest_is_the_newest_complete_physical():
    records = records_standard()
    assert restore.select_backup(records, target_of(), None)["backup_id"] == B_NEW
    assert restore.select_backup(list(reversed(records)), target_of("backup"), None)["backup_id"] == B_NEW
    assert restore.select_backup(records, target_of("xid", "900"), None)["backup_id"] == B_NEW
    # a complete record without positions is not usable
    records.insert(0, rec("20261127T130000.000Z-F", stop_lsn=None))
    assert restore.select_backup(records, target_of(), None)["backup_id"] == B_NEW


def test_select_nothing_usable():
    with pytest.raises(RestoreError, match="No complete physical backup in the catalog") as info:
        restore.select_backup([rec(B_NEW, status="failed")], target_of(), None)
    assert "backup_full.yml" in info.value.hint
    with pytest.raises(RestoreError, match="No complete physical backup"):
        restore.select_backup([], target_of(), walchain.timeline_path(1, []))


def test_select_by_id():
    records = records_standard()
    assert restore.select_backup(records, target_of(), None, B_OLD)["backup_id"] == B_OLD
    with pytest.raises(RestoreError, match="Backup 20261127T000000.000Z-F is not in the catalog"):
        restore.select_backup(records, target_of(), None, "20261127T000000.000Z-F")
    with pytest.raises(RestoreError, match="status running, kind physical") as info:
        restore.select_backup(records, target_of(), None, "20261127T120000.000Z-F")
    assert "complete physical" in info.value.hint
    with pytest.raises(RestoreError, match="status failed"):
        restore.select_backup(records, target_of(), None, "20261127T110000.000Z-F")
    with pytest.raises(RestoreError, match="status complete, kind logical"):
        restore.select_backup(records, target_of(), None, "20261127T103000.000Z-L")


def test_select_by_id_must_precede_the_target():
    records = records_standard()
    with pytest.raises(RestoreError, match="No backup finished before the target time"):
        restore.select_backup(records, target_of("time", "2026-11-27 09:00:00+00"), None, B_NEW)
    assert restore.select_backup(records, target_of("time", "2026-11-27 09:00:00+00"), None, B_OLD)[
        "backup_id"] == B_OLD


def test_select_by_time():
    records = records_standard()
    assert restore.select_backup(records, target_of("time", "2026-11-27 10:30:00+00"), None)["backup_id"] == B_NEW
    assert restore.select_backup(records, target_of("time", "2026-11-27 10:00:04Z"), None)["backup_id"] == B_OLD
    # finished exactly at the target: usable
    assert restore.select_backup(records, target_of("time", "2026-11-27 10:00:05Z"), None)["backup_id"] == B_NEW
    # zones are compared as instants: 10:30+01 is 09:30 UTC
    assert restore.select_backup(records, target_of("time", "2026-11-27 10:30:00+01"), None)["backup_id"] == B_OLD
    # the failed backup finished before 11:30 but is never picked
    assert restore.select_backup(records, target_of("time", "2026-11-27 23:00:00+00"), None)["backup_id"] == B_NEW


def test_select_by_time_none_before():
    with pytest.raises(RestoreError) as info:
        restore.select_backup(records_standard(), target_of("time", "2026-11-27 08:00:00+00"), None)
    assert "No backup finished before the target time 2026-11-27T08:00:00+00:00" in info.value.msg
    assert B_OLD in info.value.msg and "pick a later time" in info.value.hint


def test_select_by_time_skips_records_without_finish_time():
    records = [rec(B_NEW, finished_at=""), rec(B_OLD)]
    assert restore.select_backup(records, target_of("time", "2026-11-27 23:00:00+00"), None)["backup_id"] == B_OLD


def test_select_by_lsn():
    records = records_standard()
    assert restore.select_backup(records, target_of("lsn", "0/3000138"), None)["backup_id"] == B_NEW
    assert restore.select_backup(records, target_of("lsn", "0/3000137"), None)["backup_id"] == B_OLD
    assert restore.select_backup(records, target_of("lsn", "9/0"), None)["backup_id"] == B_NEW
    with pytest.raises(RestoreError, match="No backup reaches consistency before the target LSN 0/1000000"):
        restore.select_backup(records, target_of("lsn", "0/1000000"), None)


def test_select_skips_a_backup_off_the_timeline_path():
    """Timeline 3 branched from 2 at 0/5000000: a backup on 2 that stopped after that is not on the path to 3."""
    on_branch = rec("20261127T110000.000Z-F", timeline=2, stop_lsn="0/6000100")
    before_branch = rec(B_NEW, timeline=2, stop_lsn="0/4000100")
    on_one = rec(B_OLD, timeline=1, stop_lsn="0/2000100")
    records = [on_branch, before_branch, on_one]
    assert restore.select_backup(records, target_of(), LSN_PATH_3)["backup_id"] == B_NEW
    assert restore.select_backup(records, target_of(), None)["backup_id"] == on_branch["backup_id"]
    # a backup on timeline 1 after timeline 2 began is off the path too
    assert restore.select_backup([on_branch, rec(B_OLD, timeline=1, stop_lsn="0/3000100")], target_of("backup"),
                                 walchain.timeline_path(2, [(1, parse_lsn("0/3000000"), "")]))["backup_id"] \
        == on_branch["backup_id"]
    with pytest.raises(RestoreError) as info:
        restore.select_backup([on_branch], target_of(), LSN_PATH_3)
    assert "No complete physical backup lies on the path to timeline 3" in info.value.msg
    assert "20261127T110000.000Z-F on timeline 2" in info.value.msg
    with pytest.raises(RestoreError, match="lies on the path to timeline 3"):
        restore.select_backup(records, target_of(), LSN_PATH_3, on_branch["backup_id"])
    # a backup of timeline 3 itself
    on_three = rec("20261127T120000.000Z-F", timeline=3, stop_lsn="0/5000100")
    assert restore.select_backup(records + [on_three], target_of(), LSN_PATH_3)["backup_id"] == on_three[
        "backup_id"]


# --------------------------------------------------------------------------
# plan_restore against moto
# --------------------------------------------------------------------------


def test_plan_latest_without_gap(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    record, planned = plan(s3, aws_params, bucket)
    assert record["backup_id"] == B_NEW and planned["backup_id"] == B_NEW
    assert planned["bucket"] == bucket and planned["prefix"] == PREFIX and planned["timeline"] == 1
    assert planned["timeline_path"] == [{"timeline": 1, "begin_lsn": "0/0", "end_lsn": None}]
    wal = planned["wal"]
    assert wal["first"] == seg(1, 3) and wal["last"] == seg(1, 7) and wal["needed"] == 5 and wal["present"] == 5
    assert wal["missing"] == [] and wal["end_reached"] is True and wal["latest_archived"] == seg(1, 7)
    assert wal["latest_archived_time"] == at(11, 20).isoformat()
    assert planned["warnings"] == [] and planned["backup"]["stop_lsn"] == "0/3000138"
    assert planned["target"] == {"type": "latest", "value": None, "inclusive": True, "lsn": None}
    json.dumps(planned)  # goes into the module result as is


def test_plan_by_cluster_name(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    record, planned = plan(s3, aws_params, bucket, prefix=None, cluster_name="restoretest")
    assert record["backup_id"] == B_NEW and planned["prefix"] == PREFIX
    with pytest.raises(InvalidValueError, match="Neither prefix nor cluster_name"):
        plan(s3, aws_params, bucket, prefix=None, cluster_name=None)


def test_plan_time_target_picks_the_end_segment(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    record, planned = plan(s3, aws_params, bucket, "time", "2026-11-27 10:30:00+00")
    assert record["backup_id"] == B_NEW
    # segment 5 was archived at 10:40, the first one at or after the target: it holds 10:30
    assert planned["wal"]["first"] == seg(1, 3) and planned["wal"]["last"] == seg(1, 5)
    assert planned["wal"]["needed"] == 3 and planned["wal"]["missing"] == []
    record, planned = plan(s3, aws_params, bucket, "time", "2026-11-27 09:00:00+00")
    assert record["backup_id"] == B_OLD
    assert planned["wal"]["first"] == seg(1, 1) and planned["wal"]["last"] == seg(1, 3)


def test_plan_time_target_after_the_newest_archived(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    with pytest.raises(RestoreError) as info:
        plan(s3, aws_params, bucket, "time", "2026-11-27 11:30:00+00")
    msg = info.value.msg
    assert "The target time 2026-11-27T11:30:00+00:00 is after the newest archived WAL" in msg
    assert seg(1, 7) in msg and msg.endswith("Nothing was touched.")
    assert "archive_timeout" in info.value.hint
    assert info.value.details["wal"]["end_reached"] is False


def test_plan_gap_is_an_error_naming_the_segment(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    s3_client.delete_object(Bucket=bucket, Key=wal_key(1, 4))
    for target, value in (("latest", None), ("time", "2026-11-27 10:30:00+00"), ("lsn", "0/5000000")):
        with pytest.raises(RestoreError) as info:
            plan(s3, aws_params, bucket, target, value)
        msg = info.value.msg
        assert "1 WAL segment(s) missing" in msg and seg(1, 4) in msg, target
        assert "contiguous up to %s" % seg(1, 3) in msg
        assert "s3://%s/%s/wal/" % (bucket, PREFIX) in msg
        assert "Nothing was touched" in msg
        assert info.value.details["wal"]["missing"] == [seg(1, 4)]
        assert info.value.details["backup_id"] == B_NEW


def test_plan_gap_after_the_target_does_not_matter(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    s3_client.delete_object(Bucket=bucket, Key=wal_key(1, 6))
    _record, planned = plan(s3, aws_params, bucket, "time", "2026-11-27 10:30:00+00")
    assert planned["wal"]["last"] == seg(1, 5) and planned["wal"]["missing"] == []
    _record, planned = plan(s3, aws_params, bucket, "lsn", "0/5000060")
    assert planned["wal"]["last"] == seg(1, 5) and planned["wal"]["missing"] == []
    # an LSN at the very start of segment 5 only needs segment 4
    _record, planned = plan(s3, aws_params, bucket, "lsn", "0/5000000")
    assert planned["wal"]["last"] == seg(1, 4)
    with pytest.raises(RestoreError, match=seg(1, 6)):
        plan(s3, aws_params, bucket, "latest")


def test_plan_gap_before_the_chosen_backup_does_not_matter(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    s3_client.delete_object(Bucket=bucket, Key=wal_key(1, 2))
    record, planned = plan(s3, aws_params, bucket)
    assert record["backup_id"] == B_NEW and planned["wal"]["missing"] == []
    with pytest.raises(RestoreError, match=seg(1, 2)):
        plan(s3, aws_params, bucket, backup_id=B_OLD)


def test_plan_lsn_target_past_the_archive_is_refused(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    with pytest.raises(RestoreError) as info:
        plan(s3, aws_params, bucket, "lsn", "0/9000000")
    assert "Nothing was touched" in info.value.msg


@pytest.mark.parametrize("kind, value", [("xid", "812"), ("name", "before-migration")])
def test_plan_xid_or_name_with_a_gap_is_a_warning(s3_client, bucket, aws_params, kind, value):
    s3 = standard_archive(s3_client, bucket)
    s3_client.delete_object(Bucket=bucket, Key=wal_key(1, 5))
    record, planned = plan(s3, aws_params, bucket, kind, value)
    assert record["backup_id"] == B_NEW
    (warning,) = planned["warnings"]
    assert seg(1, 5) in warning and "recovery stops at the gap" in warning
    assert planned["wal"]["missing"] == [seg(1, 5)]


def test_plan_backup_target_ignores_the_archive(s3_client, bucket, aws_params):
    s3 = standard_archive(s3_client, bucket)
    for segno in (3, 4, 5):
        s3_client.delete_object(Bucket=bucket, Key=wal_key(1, segno))
    record, planned = plan(s3, aws_params, bucket, "backup")
    assert record["backup_id"] == B_NEW and planned["warnings"] == []
    record, _planned = plan(s3, aws_params, bucket, "backup", backup_id=B_OLD)
    assert record["backup_id"] == B_OLD


def test_plan_with_an_empty_archive(s3_client, bucket, aws_params):
    catalog.write_record(s3_client, bucket, PREFIX, rec(B_NEW))
    record, planned = plan(s3_client, aws_params, bucket, "backup")
    assert record["backup_id"] == B_NEW and planned["timeline"] == 1


def test_plan_empty_catalog(s3_client, bucket, aws_params):
    with pytest.raises(RestoreError, match="No complete physical backup") as info:
        plan(s3_client, aws_params, bucket)
    assert "backup_full.yml" in info.value.hint


def test_plan_missing_bucket(s3_client, aws_params):
    with pytest.raises(RtxDrError, match="does not exist.*: there is nothing to restore"):
        plan(s3_client, aws_params, "rtx-test-no-such-bucket")


def timeline_archive(s3, bucket_name, history=True):
    """Timeline 2 branched from 1 at 0/4000000; segment 4 of timeline 1 only as .partial."""
    catalog.write_record(s3, bucket_name, PREFIX, rec(B_OLD, timeline=1, stop_lsn="0/2000100"))
    for tli, segno in ((1, 2), (1, 3), (2, 4), (2, 5)):
        put_wal(s3, bucket_name, tli, segno)
    s3.put_object(Bucket=bucket_name, Key="%s/wal/00000001/%s.partial.zst" % (PREFIX, seg(1, 4)), Body=b"p")
    if history:
        put_history(s3, bucket_name, 2, "1\t0/4000000\tno recovery target specified\n")


def test_plan_follows_the_latest_timeline(s3_client, bucket, aws_params):
    timeline_archive(s3_client, bucket)
    record, planned = plan(s3_client, aws_params, bucket)
    assert record["backup_id"] == B_OLD and planned["timeline"] == 2
    assert planned["timeline_path"] == [{"timeline": 1, "begin_lsn": "0/0", "end_lsn": "0/4000000"},
                                        {"timeline": 2, "begin_lsn": "0/4000000", "end_lsn": None}]
    assert planned["wal"]["first"] == seg(1, 2) and planned["wal"]["last"] == seg(2, 5)
    assert planned["wal"]["needed"] == 4 and planned["wal"]["missing"] == []
    # the switch segment must come from the new timeline: without it there is a gap
    s3_client.delete_object(Bucket=bucket, Key=wal_key(2, 4))
    with pytest.raises(RestoreError, match=seg(2, 4)):
        plan(s3_client, aws_params, bucket)


def test_plan_current_or_numbered_timeline(s3_client, bucket, aws_params):
    timeline_archive(s3_client, bucket)
    for value in ("current", "1"):
        record, planned = plan(s3_client, aws_params, bucket, target_timeline=value)
        assert record["backup_id"] == B_OLD and planned["timeline"] == 1
        assert planned["wal"]["last"] == seg(1, 3) and planned["wal"]["missing"] == []
    record, planned = plan(s3_client, aws_params, bucket, target_timeline="2")
    assert planned["timeline"] == 2 and planned["wal"]["last"] == seg(2, 5)


def test_plan_timeline_history_missing(s3_client, bucket, aws_params):
    """Without 00000002.history recovery cannot go from a backup of timeline 1 to timeline 2."""
    timeline_archive(s3_client, bucket, history=False)
    with pytest.raises(RestoreError) as info:
        plan(s3_client, aws_params, bucket)
    assert "No complete physical backup lies on the path to timeline 2" in info.value.msg
    assert "%s on timeline 1" % B_OLD in info.value.msg
    # timeline 1 itself is still fine
    record, planned = plan(s3_client, aws_params, bucket, target_timeline="current")
    assert record["backup_id"] == B_OLD and planned["timeline"] == 1 and planned["warnings"] == []


def test_plan_timeline_history_missing_backup_of_that_timeline(s3_client, bucket, aws_params):
    """A backup taken on timeline 2 needs no ancestor: usable without the history file, with a warning."""
    timeline_archive(s3_client, bucket, history=False)
    catalog.write_record(s3_client, bucket, PREFIX, rec(B_NEW, timeline=2, stop_lsn="0/4000100"))
    record, planned = plan(s3_client, aws_params, bucket)
    assert record["backup_id"] == B_NEW and planned["timeline"] == 2
    assert planned["wal"]["first"] == seg(2, 4) and planned["wal"]["last"] == seg(2, 5)
    assert planned["wal"]["missing"] == []
    (warning,) = planned["warnings"]
    assert "00000002.history is not in the WAL archive" in warning


def test_plan_skips_a_backup_on_an_abandoned_branch(s3_client, bucket, aws_params):
    """Timeline 3 branched from 2 at 0/5000000; the newest backup ran on 2 after that (a branch since abandoned)."""
    abandoned = "20261127T110000.000Z-F"
    for record in (rec(B_OLD, timeline=1, stop_lsn="0/2000100"), rec(B_NEW, timeline=2, stop_lsn="0/4000100"),
                   rec(abandoned, timeline=2, stop_lsn="0/6000100")):
        catalog.write_record(s3_client, bucket, PREFIX, record)
    for tli, segno in ((1, 2), (2, 3), (2, 4), (2, 5), (2, 6), (3, 5), (3, 6), (3, 7)):
        put_wal(s3_client, bucket, tli, segno)
    put_history(s3_client, bucket, 2, "1\t0/3000000\tno recovery target specified\n")
    put_history(s3_client, bucket, 3, "1\t0/3000000\tno recovery target specified\n"
                                      "2\t0/5000000\tbefore 2026-11-27 10:45:00+00\n")
    record, planned = plan(s3_client, aws_params, bucket)
    assert record["backup_id"] == B_NEW and planned["timeline"] == 3
    assert planned["wal"]["first"] == seg(2, 4) and planned["wal"]["last"] == seg(3, 7)
    assert planned["wal"]["needed"] == 4 and planned["wal"]["missing"] == []
    # on timeline 2 itself the abandoned branch's backup is the newest
    record, _planned = plan(s3_client, aws_params, bucket, target_timeline="2")
    assert record["backup_id"] == abandoned
    with pytest.raises(RestoreError, match="lies on the path to timeline 3"):
        plan(s3_client, aws_params, bucket, backup_id=abandoned)


# --------------------------------------------------------------------------
# Destination
# --------------------------------------------------------------------------


def dead_pid():
    proc = subprocess.Popen(["true"])  # pylint: disable=consider-using-with
    proc.wait()
    return proc.pid


def test_postmaster_running(tmp_path):
    assert restore.postmaster_running(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text("%d\n%s\n" % (os.getpid(), tmp_path))
    assert restore.postmaster_running(str(tmp_path)) == os.getpid()
    (tmp_path / "postmaster.pid").write_text("%d\n" % dead_pid())
    assert restore.postmaster_running(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert restore.postmaster_running(str(tmp_path)) is None
    (tmp_path / "postmaster.pid").write_text("")
    assert restore.postmaster_running(str(tmp_path)) is None


@pytest.mark.parametrize("force", [False, True])
def test_check_destination_running_server_refused_even_with_force(tmp_path, force):
    data = tmp_path / "main"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (data / "postmaster.pid").write_text("%d\n%s\n1764244800\n5432\n" % (os.getpid(), data))
    with pytest.raises(RestoreError) as info:
        restore.check_destination(str(data), force)
    assert "(pid %d) is running on %s" % (os.getpid(), data) in info.value.msg
    assert "Nothing was touched" in info.value.msg
    assert sorted(os.listdir(data)) == ["PG_VERSION", "postmaster.pid"]


def test_check_destination_non_empty(tmp_path):
    data = tmp_path / "main"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    with pytest.raises(RestoreError) as info:
        restore.check_destination(str(data), False)
    assert "is not empty" in info.value.msg and "Nothing was touched" in info.value.msg
    assert "%s.rtx-dr-before-<restore_id>" % data in info.value.hint
    # a stale postmaster.pid of a dead server is no running server
    (data / "postmaster.pid").write_text("%d\n" % dead_pid())
    assert restore.check_destination(str(data), True) == {"exists": True, "empty": False, "move_aside": True}
    assert (data / "PG_VERSION").exists()


def test_check_destination_new_or_empty(tmp_path):
    assert restore.check_destination(str(tmp_path / "new"), False) == {
        "exists": False, "empty": True, "move_aside": False}
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert restore.check_destination(str(tmp_path / "empty") + "/", False) == {
        "exists": True, "empty": True, "move_aside": False}


@pytest.mark.parametrize("path", ["relative/main", "main", "./main", "/", "/var", "/var/lib/", "/home"])
def test_check_destination_bad_paths(path):
    with pytest.raises(InvalidValueError, match="must be an absolute path of a data directory"):
        restore.check_destination(path, True)


def test_check_destination_parent_missing(tmp_path):
    with pytest.raises(InvalidValueError, match=re.escape("parent directory %s of data_directory does not exist"
                                                          % (tmp_path / "nope"))):
        restore.check_destination(str(tmp_path / "nope" / "main"), False)


class FakeStatvfs:  # pylint: disable=too-few-public-methods
    def __init__(self, free):
        self.f_bavail = free // 4096
        self.f_frsize = 4096


def test_check_destination_free_space(tmp_path, monkeypatch):
    seen = []

    def statvfs(path):
        seen.append(path)
        return FakeStatvfs(4096 * 1000)

    monkeypatch.setattr(restore.os, "statvfs", statvfs)
    data = str(tmp_path / "main")
    # 10 % margin: 4096000 free holds 3723636 bytes but not 3723637
    assert restore.check_destination(data, False, 3723636)["exists"] is False
    with pytest.raises(RestoreError) as info:
        restore.check_destination(data, False, 3723637)
    assert "Not enough free space in %s: 4096000 bytes free, the backup needs 3723637" % tmp_path in info.value.msg
    assert "Nothing was touched" in info.value.msg
    assert seen and set(seen) == {str(tmp_path)}
    # no size in the record: no space check
    seen.clear()
    restore.check_destination(data, False, 0)
    assert not seen


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_destination_parent_not_writable(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(RestoreError, match="Cannot write in"):
            restore.check_destination(str(parent / "main"), False)
    finally:
        parent.chmod(0o700)


# --------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------


def test_unpack_tar_writes_files_and_dirs_private(tmp_path):
    files = {"PG_VERSION": b"15\n", "base/1/1259": b"x" * 3000, "deep/er/file": b"y", "empty": b""}
    data = make_tar(files, dirs=("base", "base/1", "pg_wal", "pg_wal/archive_status"), fifos=("a_fifo",),
                    mode=0o666)
    root = tmp_path / "root"
    root.mkdir()
    facts = restore.unpack_tar(io.BytesIO(data), str(root))
    assert facts == {"files": 4, "bytes": 3004}
    got = tree(root)
    assert {k: v for k, v in got.items() if v != "dir"} == files
    assert {k for k, v in got.items() if v == "dir"} == {"base", "base/1", "pg_wal", "pg_wal/archive_status",
                                                         "deep", "deep/er"}
    for name in files:
        assert stat.S_IMODE(os.stat(root / name).st_mode) == 0o600, name
    for name in ("base", "base/1", "pg_wal", "pg_wal/archive_status", "deep/er"):
        assert stat.S_IMODE(os.stat(root / name).st_mode) == 0o700, name
    # (a parent that has no member of its own, "deep", gets os.makedirs' default mode: never group/other-writable)
    assert not stat.S_IMODE(os.stat(root / "deep").st_mode) & 0o022
    assert not (root / "a_fifo").exists()


@pytest.mark.parametrize("members, what", [
    ({"files": {"/etc/rtx-dr-evil": b"x"}}, "unsafe path"),
    ({"files": {"../evil": b"x"}}, "unsafe path"),
    ({"files": {"base/../../evil": b"x"}}, "unsafe path"),
    ({"dirs": ("..",)}, "unsafe path"),
    ({"symlinks": {"pg_tblspc/16384": "/srv/tablespace"}}, "holds a link"),
    ({"symlinks": {"pg_wal": "../elsewhere"}}, "holds a link"),
    ({"files": {"PG_VERSION": b"15\n"}, "hardlinks": {"copy": "PG_VERSION"}}, "holds a link"),
])
def test_unpack_tar_refuses_unsafe_members(tmp_path, members, what):
    root = tmp_path / "a" / "root"
    root.mkdir(parents=True)
    with pytest.raises(RestoreError, match=what):
        restore.unpack_tar(io.BytesIO(make_tar(**members)), str(root))
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not os.path.lexists(root / "pg_tblspc" / "16384") and not os.path.lexists(root / "pg_wal")
    assert not os.path.exists("/etc/rtx-dr-evil")


def test_unpack_tar_refuses_before_writing_past_the_member(tmp_path):
    """A bad member stops the unpack there: nothing after it is written."""
    data = make_tar({"PG_VERSION": b"15\n", "../evil": b"x", "later": b"y"})
    with pytest.raises(RestoreError):
        restore.unpack_tar(io.BytesIO(data), str(tmp_path))
    assert (tmp_path / "PG_VERSION").exists() and not (tmp_path / "later").exists()


# --------------------------------------------------------------------------
# _HashingStream and download_backup
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["zstd", "gzip", "lz4", "none"])
def test_hashing_stream(method, monkeypatch):
    monkeypatch.setattr(restore, "CHUNK", 1000)
    raw = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(2000))  # 64000 bytes
    stored = compress(method, raw)
    progress = []
    stream = restore._HashingStream(io.BytesIO(stored), method, progress.append)  # pylint: disable=protected-access
    out = stream.read(10) + stream.read(0) + stream.read(4990) + stream.read(50000)
    assert out == raw[:55000] and stream.raw == 55000
    assert stream.read() == raw[55000:] and stream.read(100) == b"" and stream.read() == b""
    assert stream.sha.hexdigest() == hashlib.sha256(stored).hexdigest() and stream.stored == len(stored)
    assert progress == sorted(progress) and progress[-1] == len(stored)


def test_hashing_stream_drain_hashes_what_is_not_read(monkeypatch):
    monkeypatch.setattr(restore, "CHUNK", 100)
    stored = compress("gzip", b"a" * 512 + b"\0" * 10000)
    stream = restore._HashingStream(io.BytesIO(stored), "gzip")  # pylint: disable=protected-access
    assert stream.read(512) == b"a" * 512
    stream.drain()
    assert stream.eof and stream.stored == len(stored)
    assert stream.sha.hexdigest() == hashlib.sha256(stored).hexdigest()


@pytest.mark.parametrize("method", ["zstd", "gzip", "none"])
def test_download_backup(s3_client, bucket, tmp_path, method):
    record = put_backup(s3_client, bucket, method=method)
    root = tmp_path / "partial"
    root.mkdir()
    logs = []
    facts = restore.download_backup(s3_client, record, str(root), True, logs.append)
    got = tree(root)
    assert {k: v for k, v in got.items() if v != "dir"} == dict(DATA_FILES, backup_manifest=MANIFEST)
    base, manifest = record["objects"]
    assert [(o["key"], o["role"], o["bytes"], o["sha256"]) for o in facts["objects"]] == [
        (base["key"], "base", base["size"], base["sha256"]),
        (manifest["key"], "manifest", manifest["size"], manifest["sha256"])]
    assert facts["objects"][0]["unpacked"] == {"files": len(DATA_FILES),
                                               "bytes": sum(len(v) for v in DATA_FILES.values())}
    assert facts["objects"][1]["unpacked"] == {"files": 1, "bytes": len(MANIFEST)}


def test_download_backup_logs_progress(s3_client, bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(restore, "CHUNK", 64)
    record = put_backup(s3_client, bucket, method="none", files={"big": b"z" * 60000})
    logs = []
    restore.download_backup(s3_client, record, str(tmp_path), True, logs.append)
    total = record["objects"][0]["size"]
    assert logs and all(line.startswith("restore: ") and line.endswith(" of %d bytes downloaded" % total)
                        for line in logs)
    done = [int(line.split()[1]) for line in logs]
    assert done == sorted(done) and all(b - a >= 256 * 64 for a, b in zip([0] + done, done))


def test_download_backup_checksum_mismatch_names_the_key(s3_client, bucket, tmp_path):
    record = put_backup(s3_client, bucket)
    base = record["objects"][0]
    good = base["sha256"]
    base["sha256"] = "0" * 64
    with pytest.raises(RestoreError) as info:
        restore.download_backup(s3_client, record, str(tmp_path))
    msg = info.value.msg
    assert msg.startswith("Checksum mismatch for s3://%s/%s" % (bucket, base["key"]))
    assert good in msg and "0" * 64 in msg and "%d bytes" % base["size"] in msg
    assert "backup_id" in info.value.hint
    # without verify_checksums the catalog's SHA256 is not compared
    (tmp_path / "again").mkdir()
    facts = restore.download_backup(s3_client, record, str(tmp_path / "again"), False)
    assert facts["objects"][0]["sha256"] == good


def test_download_backup_manifest_checksum_mismatch(s3_client, bucket, tmp_path):
    record = put_backup(s3_client, bucket)
    manifest = record["objects"][1]
    s3_client.put_object(Bucket=bucket, Key=manifest["key"], Body=MANIFEST.replace(b"00", b"01"))
    with pytest.raises(RestoreError, match="Checksum mismatch for s3://%s/%s" % (bucket, manifest["key"])):
        restore.download_backup(s3_client, record, str(tmp_path))


def test_download_backup_size_mismatch(s3_client, bucket, tmp_path):
    record = put_backup(s3_client, bucket, method="gzip")
    base = record["objects"][0]
    base["size"] += 1
    with pytest.raises(RestoreError) as info:
        restore.download_backup(s3_client, record, str(tmp_path))
    assert info.value.msg == "s3://%s/%s has %d bytes, the catalog says %d" % (
        bucket, base["key"], base["size"] - 1, base["size"])


def test_download_backup_replaced_object(s3_client, bucket, tmp_path):
    """Another valid tar of the same size put in place of the base object: only the SHA256 can tell."""
    record = put_backup(s3_client, bucket, method="none")
    base = record["objects"][0]
    body = s3_client.get_object(Bucket=bucket, Key=base["key"])["Body"].read()
    forged = body.replace(b"c" * 8192, b"d" * 8192)
    assert len(forged) == len(body) and forged != body
    s3_client.put_object(Bucket=bucket, Key=base["key"], Body=forged)
    with pytest.raises(RestoreError, match="Checksum mismatch for s3://%s/%s" % (bucket, base["key"])):
        restore.download_backup(s3_client, record, str(tmp_path))


@pytest.mark.parametrize("method", ["zstd", "gzip", "lz4"])
def test_download_backup_corrupt_compressed_object(s3_client, bucket, tmp_path, method):
    """Garbage where compressed data should be is reported for the object, not as an unexpected error."""
    record = put_backup(s3_client, bucket, method=method)
    base = record["objects"][0]
    s3_client.put_object(Bucket=bucket, Key=base["key"], Body=b"\x00garbage, not %s data" % method.encode() * 50)
    with pytest.raises(RestoreError) as info:
        restore.download_backup(s3_client, record, str(tmp_path))
    assert base["key"] in info.value.msg


def test_download_backup_truncated_object(s3_client, bucket, tmp_path):
    record = put_backup(s3_client, bucket, method="none")
    base = record["objects"][0]
    body = s3_client.get_object(Bucket=bucket, Key=base["key"])["Body"].read()
    s3_client.put_object(Bucket=bucket, Key=base["key"], Body=body[:5000])
    with pytest.raises(RestoreError) as info:
        restore.download_backup(s3_client, record, str(tmp_path))
    assert base["key"] in info.value.msg


def test_download_backup_reads_the_given_bucket(s3_client, bucket, tmp_path):
    """The objects are read from the bucket whose catalog named them, not the one written in the record."""
    record = put_backup(s3_client, bucket)
    record["bucket"] = "rtx-test-the-source-bucket-that-is-gone"
    facts = restore.download_backup(s3_client, record, str(tmp_path), bucket=bucket)
    assert [o["role"] for o in facts["objects"]] == ["base", "manifest"]
    assert (tmp_path / "PG_VERSION").read_bytes() == b"15\n"
    with pytest.raises(RtxDrError, match="rtx-test-the-source-bucket-that-is-gone"):
        restore.download_backup(s3_client, record, str(tmp_path / "x"))


def test_download_backup_missing_object(s3_client, bucket, tmp_path):
    record = put_backup(s3_client, bucket)
    s3_client.delete_object(Bucket=bucket, Key=record["objects"][0]["key"])
    with pytest.raises(RtxDrError) as info:
        restore.download_backup(s3_client, record, str(tmp_path))
    assert record["objects"][0]["key"] in info.value.msg


def test_download_backup_without_base_object(s3_client, bucket, tmp_path):
    record = put_backup(s3_client, bucket)
    record["objects"] = [record["objects"][1], {"key": "x", "role": "dump"}]
    with pytest.raises(RestoreError, match="Backup %s has no base object" % B_NEW):
        restore.download_backup(s3_client, record, str(tmp_path))


def test_download_backup_unsafe_tar_in_s3(s3_client, bucket, tmp_path):
    record = put_backup(s3_client, bucket, files={"PG_VERSION": b"15\n", "../evil": b"x"})
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(RestoreError, match="unsafe path"):
        restore.download_backup(s3_client, record, str(root))
    assert not (tmp_path / "evil").exists()


# --------------------------------------------------------------------------
# Restore: end to end on tmp_path with fake programs
# --------------------------------------------------------------------------

CONTROLDATA = """pg_control version number:            1300
Database cluster state:               in archive recovery
max_connections setting:              250
max_worker_processes setting:         16
max_wal_senders setting:              10
max_prepared_xacts setting:           0
max_locks_per_xact setting:           128
"""


class FakeRun:
    """``run(argv, env)`` of the PostgreSQL tools: pg_verifybackup answers ``verify_rc``."""

    def __init__(self, verify_rc=0):
        self.verify_rc = verify_rc
        self.calls = []
        self.seen_at_verify = None

    def __call__(self, argv, env=None):
        self.calls.append(list(argv))
        tool = os.path.basename(argv[0])
        if tool == "pg_verifybackup":
            self.seen_at_verify = tree(argv[1])
            if self.verify_rc == 0:
                return 0, "backup successfully verified\n", ""
            return 1, "", ('pg_verifybackup: error: "base/1/1259" has size 10239 on disk but size 10240 in the '
                           'manifest\n')
        if tool == "pg_controldata":
            return 0, CONTROLDATA, ""
        raise AssertionError("unexpected command %r" % (argv,))


def find_binary(name, version):
    assert version == 150004
    return "/fake/bin/%s" % name


def restore_params(aws, bucket_name, tmp_path, **overrides):
    agent = tmp_path / "agent.json"
    if not agent.exists():
        agent.write_text("{}")
    params = plan_params(aws, bucket_name)
    params.update(target="latest", target_value=None, target_inclusive=True, target_action="promote",
                  data_directory=str(tmp_path / "main"), mode="restore", force=False, archive_mode=None,
                  port=5499, agent_config=str(agent), agent_path="/usr/local/lib/rtx-dr",
                  agent_python="/usr/bin/python3", verify_checksums=True, plan_only=False, restore_id=RESTORE_ID)
    params.update(overrides)
    return params


def make_job(s3, params, run=None):
    def connect(_params):  # pragma: no cover - never reached without a verify drill
        raise AssertionError("no connection expected")

    return restore.Restore(params, s3, run or FakeRun(), find_binary, connect)


def auto_conf_settings(path):
    """Settings of the rtx.dr block of postgresql.auto.conf (the text after the block's header)."""
    text = Path(path).read_text()
    head = "# --- rtx.dr restore %s of backup " % RESTORE_ID
    assert text.count(head) == 1
    block = text.split(head, 1)[1].splitlines()[1:]
    return text, dict(line.split(" = ", 1) for line in block)


def test_restore_files_end_to_end(s3_client, bucket, aws_params, tmp_path):
    # written from another bucket name (a copy of the bucket): the objects are read from the option's bucket
    record = put_backup(s3_client, bucket, bucket="rtx-test-where-it-was-written")
    for segno in (3, 4):
        put_wal(s3_client, bucket, 1, segno)
    run = FakeRun()
    job = make_job(s3_client, restore_params(aws_params, bucket, tmp_path), run)
    result = job.execute()
    data = tmp_path / "main"
    assert result["changed"] is True and result["backup_id"] == B_NEW
    assert result["data_directory"] == str(data) and result["destination"]["exists"] is False
    assert result["plan"]["wal"]["last"] == seg(1, 4) and result["plan"]["archive_mode"] == "keep"
    assert result["plan"]["restore_id"] == RESTORE_ID and "warnings" not in result["plan"]
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert not os.path.exists(str(data) + restore.PARTIAL_SUFFIX)
    assert sorted(os.listdir(tmp_path)) == ["agent.json", "main"]
    # pg_verifybackup ran on the complete partial directory, before it was configured
    assert run.calls == [["/fake/bin/pg_verifybackup", str(data) + restore.PARTIAL_SUFFIX]]
    assert run.seen_at_verify["backup_manifest"] == MANIFEST and "recovery.signal" not in run.seen_at_verify
    assert result["commands"] == ["/fake/bin/pg_verifybackup %s%s" % (data, restore.PARTIAL_SUFFIX)]
    assert result["checks"][0]["name"] == "pg_verifybackup" and result["checks"][0]["ok"] is True
    got = tree(data)
    for name, content in DATA_FILES.items():
        if name in ("standby.signal", "postmaster.opts"):
            assert name not in got, name
        elif name != "postgresql.auto.conf":
            assert got[name] == content, name
    assert got["recovery.signal"] == b"" and got["backup_manifest"] == MANIFEST
    text, settings = auto_conf_settings(data / "postgresql.auto.conf")
    assert text.startswith(DATA_FILES["postgresql.auto.conf"].decode())  # appended, not replaced
    assert settings == {
        "restore_command": "'%s'" % restore.restore_command(job.params),
        "recovery_target_timeline": "'latest'",
        "synchronous_standby_names": "''", "primary_conninfo": "''", "primary_slot_name": "''"}
    assert result["recovery_settings"]["synchronous_standby_names"] == ""
    assert [o["role"] for o in result["download"]["objects"]] == ["base", "manifest"]
    json.dumps(result)


def test_restore_files_time_target_settings(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    s3 = TimedS3(s3_client, {put_wal(s3_client, bucket, 1, 3): at(10, 10), put_wal(s3_client, bucket, 1, 4): at(11)})
    params = restore_params(aws_params, bucket, tmp_path, target="time", target_value="2026-11-27 10:30:00Z",
                            target_inclusive=False, target_action="pause", archive_mode="off")
    result = make_job(s3, params).execute()
    _text, settings = auto_conf_settings(tmp_path / "main" / "postgresql.auto.conf")
    assert settings["recovery_target_time"] == "'2026-11-27 10:30:00+00:00'"
    assert settings["recovery_target_inclusive"] == "'off'" and settings["recovery_target_action"] == "'pause'"
    assert settings["archive_mode"] == "'off'" and settings["archive_command"] == "''"
    assert result["plan"]["wal"]["last"] == seg(1, 4)


def test_restore_files_verify_failure_leaves_nothing(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    data = tmp_path / "main"
    data.mkdir()
    (data / "old").write_text("production")
    job = make_job(s3_client, restore_params(aws_params, bucket, tmp_path, force=True), FakeRun(verify_rc=1))
    with pytest.raises(RestoreError) as info:
        job.execute()
    assert "pg_verifybackup found the restored files different from the backup manifest of %s" % B_NEW \
        in info.value.msg
    assert "has size 10239 on disk" in info.value.msg and "not created" in info.value.hint
    assert not os.path.exists(str(data) + restore.PARTIAL_SUFFIX)
    # the old directory was not moved aside nor changed
    assert tree(data) == {"old": b"production"}
    assert sorted(os.listdir(tmp_path)) == ["agent.json", "main"]


def test_restore_files_verify_failure_new_directory(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    job = make_job(s3_client, restore_params(aws_params, bucket, tmp_path), FakeRun(verify_rc=1))
    with pytest.raises(RestoreError):
        job.execute()
    assert sorted(os.listdir(tmp_path)) == ["agent.json"]


def test_restore_files_download_failure_leaves_nothing(s3_client, bucket, aws_params, tmp_path):
    record = put_backup(s3_client, bucket)
    record["objects"][0]["sha256"] = "f" * 64
    catalog.write_record(s3_client, bucket, PREFIX, record)
    run = FakeRun()
    with pytest.raises(RestoreError, match="Checksum mismatch"):
        make_job(s3_client, restore_params(aws_params, bucket, tmp_path), run).execute()
    assert sorted(os.listdir(tmp_path)) == ["agent.json"] and run.calls == []


def test_restore_files_force_moves_the_old_directory_aside(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    data = tmp_path / "main"
    (data / "base").mkdir(parents=True)
    (data / "PG_VERSION").write_text("14\n")
    (data / "base" / "old").write_text("old data")
    (data / "postmaster.pid").write_text("%d\n" % dead_pid())
    result = make_job(s3_client, restore_params(aws_params, bucket, tmp_path, force=True)).execute()
    aside = tmp_path / ("main.rtx-dr-before-%s" % RESTORE_ID)
    assert result["moved_aside"] == str(aside) and result["destination"]["move_aside"] is True
    assert tree(aside) == {"PG_VERSION": b"14\n", "base": "dir", "base/old": b"old data",
                           "postmaster.pid": (aside / "postmaster.pid").read_bytes()}
    assert (data / "PG_VERSION").read_bytes() == b"15\n" and not (data / "base" / "old").exists()
    assert (data / "recovery.signal").exists()


def test_restore_files_empty_directory_is_replaced(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    (tmp_path / "main").mkdir(mode=0o755)
    result = make_job(s3_client, restore_params(aws_params, bucket, tmp_path)).execute()
    assert "moved_aside" not in result and (tmp_path / "main" / "PG_VERSION").exists()
    assert stat.S_IMODE(os.stat(tmp_path / "main").st_mode) == 0o700


def test_restore_files_leftover_partial_is_replaced(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    partial = tmp_path / ("main" + restore.PARTIAL_SUFFIX)
    partial.mkdir()
    (partial / "stale").write_text("from an interrupted restore")
    make_job(s3_client, restore_params(aws_params, bucket, tmp_path)).execute()
    assert not partial.exists() and not (tmp_path / "main" / "stale").exists()


def test_restore_refusals_before_anything_is_touched(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    data = tmp_path / "main"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    run = FakeRun()
    with pytest.raises(RestoreError, match="is not empty"):
        make_job(s3_client, restore_params(aws_params, bucket, tmp_path), run).execute()
    (data / "postmaster.pid").write_text("%d\n" % os.getpid())
    with pytest.raises(RestoreError, match="is running"):
        make_job(s3_client, restore_params(aws_params, bucket, tmp_path, force=True), run).execute()
    with pytest.raises(RestoreError, match="agent configuration .* is missing or unreadable"):
        make_job(s3_client, restore_params(aws_params, bucket, tmp_path, data_directory=str(tmp_path / "new"),
                                           agent_config=str(tmp_path / "none.json")), run).execute()
    assert run.calls == [] and sorted(os.listdir(tmp_path)) == ["agent.json", "main"]
    assert sorted(os.listdir(data)) == ["PG_VERSION", "postmaster.pid"]


def test_restore_check_mode_and_plan_only_write_nothing(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    run = FakeRun()
    result = make_job(s3_client, restore_params(aws_params, bucket, tmp_path), run).execute(check_mode=True)
    assert result["changed"] is False and result["msg"].startswith("check mode: would restore backup %s" % B_NEW)
    assert result["destination"] == {"exists": False, "empty": True, "move_aside": False}
    result = make_job(s3_client, restore_params(aws_params, bucket, tmp_path, plan_only=True,
                                                data_directory=str(tmp_path / "no" / "parent")), run).execute()
    assert result["msg"].startswith("plan only: backup %s" % B_NEW) and "destination" not in result
    assert run.calls == [] and sorted(os.listdir(tmp_path)) == ["agent.json"]


def test_restore_verify_mode_configures_a_private_scratch_server(s3_client, bucket, aws_params, tmp_path):
    put_backup(s3_client, bucket)
    run = FakeRun()
    drills = tmp_path / "drills"
    job = make_job(s3_client, restore_params(aws_params, bucket, tmp_path, mode="verify",
                                             data_directory=str(drills), port=5599), run)
    assert job.archive_mode == "off"
    job.plan()
    job.preflight()
    scratch = drills / RESTORE_ID
    assert job.data_directory == str(scratch) and job.result["data_directory"] == str(scratch)
    assert stat.S_IMODE(os.stat(drills).st_mode) == 0o700
    job.restore_files()
    assert [os.path.basename(c[0]) for c in run.calls] == ["pg_verifybackup", "pg_controldata"]
    assert run.calls[1] == ["/fake/bin/pg_controldata", "-D", str(scratch) + restore.PARTIAL_SUFFIX]
    _text, settings = auto_conf_settings(scratch / "postgresql.auto.conf")
    assert settings["archive_mode"] == "'off'" and settings["archive_command"] == "''"
    assert settings["synchronous_standby_names"] == "''" and settings["primary_conninfo"] == "''"
    assert settings["port"] == "'5599'" and settings["listen_addresses"] == "''"
    assert settings["unix_socket_directories"] == "'%s'" % scratch
    assert settings["hba_file"] == "'%s/pg_hba.conf'" % scratch
    assert settings["cluster_name"] == "'rtx-dr-drill'"
    # the block's later lines override the production ones: archive_mode off comes after everything else
    conf = (scratch / "postgresql.conf").read_text()
    assert "port = 5599\n" in conf and "max_connections = 250\n" in conf and "max_locks_per_transaction = 128\n" \
        in conf and "max_prepared_transactions = 0\n" in conf
    assert (scratch / "pg_hba.conf").read_text() == "local all all trust\n"
    assert (scratch / "pg_ident.conf").read_text() == ""
    assert (scratch / "recovery.signal").exists()
    # the scratch server's directory is removed by the teardown
    job.teardown(str(scratch) + ".log")
    assert job.result["scratch_removed"] is True and os.listdir(drills) == []


def test_restore_verify_mode_refuses_archive_mode_keep(tmp_path):
    with pytest.raises(InvalidValueError, match="archive_mode=keep with mode=verify"):
        restore.Restore({"mode": "verify", "archive_mode": "keep", "data_directory": str(tmp_path)}, None, None,
                        None, None)
    job = restore.Restore({"data_directory": str(tmp_path) + "/x/../main"}, None, None, None, None)
    assert job.archive_mode == "keep" and job.data_directory == str(tmp_path / "main")
    assert job.restore_id.startswith("R") and job.result["changed"] is False


# --------------------------------------------------------------------------
# Verify-only drill with a fake scratch server
# --------------------------------------------------------------------------


class FakeServer(FakeRun):
    """pg_ctl start writes postmaster.pid (this process) and a server log; stop removes the pid file."""

    def __init__(self, log_text="", starts=True, amcheck_rc=0):
        super().__init__()
        self.log_text = log_text
        self.starts = starts
        self.amcheck_rc = amcheck_rc

    def __call__(self, argv, env=None):
        tool = os.path.basename(argv[0])
        if tool == "pg_ctl":
            self.calls.append(list(argv))
            datadir = argv[argv.index("-D") + 1]
            if argv[-1] == "start":
                Path(argv[argv.index("-l") + 1]).write_text(self.log_text)
                if self.starts:
                    Path(datadir, "postmaster.pid").write_text("%d\n%s\n" % (os.getpid(), datadir))
            elif argv[-1] == "stop":
                os.unlink(os.path.join(datadir, "postmaster.pid"))
            return 0, "", ""
        if tool == "pg_amcheck":
            self.calls.append(list(argv))
            return self.amcheck_rc, "", "" if self.amcheck_rc == 0 else "heap table \"t\": block 3 is corrupt"
        return super().__call__(argv, env)


class FakeConn:  # pylint: disable=too-few-public-methods
    closed = 0

    def close(self):
        FakeConn.closed += 1


@pytest.fixture
def fake_queries(monkeypatch):
    """postgres.query_one/query_all answering the drill's queries; ``state`` and ``rows`` can be changed."""
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel

    answers = {"state": {"in_recovery": False, "timeline": 2, "last_replay_time": None, "pause_state": None,
                         "lsn": "0/4000A10"},
               "rows": [{"count": 5}], "sql": []}
    monkeypatch.setattr(postgres, "query_one", lambda conn, sql, params=None: dict(answers["state"]))

    def query_all(conn, sql, params=None):
        answers["sql"].append(sql)
        return answers["rows"]

    monkeypatch.setattr(postgres, "query_all", query_all)
    return answers


def drill(s3_client, bucket_name, aws, tmp_path, server, server_up=True, **params):
    put_backup(s3_client, bucket_name)
    put_wal(s3_client, bucket_name, 1, 3)
    seen = []

    def connect(conn_params):
        seen.append(conn_params)
        if not server_up:
            raise RtxDrError("connection to server on socket failed: No such file or directory")
        return FakeConn()

    job = restore.Restore(restore_params(aws, bucket_name, tmp_path, mode="verify",
                                         data_directory=str(tmp_path / "drills"), **params),
                          s3_client, server, find_binary, connect)
    job.clock = FakeClock()
    return job, seen


class FakeClock:  # pylint: disable=too-few-public-methods
    """Each reading is one second later: waits end without sleeping long."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_verify_drill_success(s3_client, bucket, aws_params, tmp_path, fake_queries):
    server = FakeServer(PG15_LOG)
    job, seen = drill(s3_client, bucket, aws_params, tmp_path, server,
                      sql_checks=[{"name": "positions", "sql": "SELECT count(*) FROM t", "database": "trading",
                                   "expect": "5"}])
    result = job.execute()
    scratch = str(tmp_path / "drills" / RESTORE_ID)
    assert result["data_directory"] == scratch and result["scratch_removed"] is True
    assert os.listdir(tmp_path / "drills") == []
    assert result["state"]["in_recovery"] is False and result["state"]["recovery"]["consistent"] == "0/3000138"
    assert result["rto_seconds"] > 0 and result["recovery_log"][-1].endswith("ready to accept connections")
    checks = {c["name"]: c for c in result["checks"]}
    assert [c["name"] for c in result["checks"]] == ["pg_verifybackup", "consistent", "pg_amcheck", "positions"]
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    assert checks["positions"]["output"] == "5" and checks["positions"]["database"] == "trading"
    amcheck = next(c for c in server.calls if c[0].endswith("pg_amcheck"))
    assert amcheck[:5] == ["/fake/bin/pg_amcheck", "-h", scratch, "-p", "5499"] and "--install-missing" in amcheck
    stop = server.calls[-1]
    assert stop[0] == "/fake/bin/pg_ctl" and stop[-1] == "stop" and "immediate" in stop
    # the drill only ever talks to its private socket
    assert seen and all(p["login_unix_socket"] == scratch and p["login_host"] is None and p["login_port"] == 5499
                        for p in seen)
    assert {p["login_db"] for p in seen} == {"postgres", "trading"}


def test_verify_drill_failed_sql_check_still_tears_down(s3_client, bucket, aws_params, tmp_path, fake_queries):
    fake_queries["rows"] = [{"count": 4}]
    job, _seen = drill(s3_client, bucket, aws_params, tmp_path, FakeServer(PG15_LOG), target="xid",
                       target_value="812", sql_checks=[{"name": "positions", "sql": "SELECT 1", "expect": "5"}])
    with pytest.raises(RestoreError) as info:
        job.execute()
    assert "Restore verification of backup %s failed: positions: returned '4', expected '5'" % B_NEW \
        in info.value.msg
    assert info.value.details["scratch_removed"] is True and os.listdir(tmp_path / "drills") == []
    checks = {c["name"]: c for c in info.value.details["checks"]}
    assert checks["target_reached"]["ok"] is True
    assert checks["target_reached"]["output"].startswith("before commit of transaction 812")


def test_verify_drill_amcheck_failure(s3_client, bucket, aws_params, tmp_path, fake_queries):
    job, _seen = drill(s3_client, bucket, aws_params, tmp_path, FakeServer(PG15_LOG, amcheck_rc=2))
    with pytest.raises(RestoreError, match="pg_amcheck: heap table .t.: block 3 is corrupt"):
        job.execute()
    assert os.listdir(tmp_path / "drills") == []


def test_verify_drill_server_stops_during_recovery(s3_client, bucket, aws_params, tmp_path, fake_queries):
    log = ("2026-11-27 12:00:10.300 UTC [4244] LOG:  redo starts at 0/3000028\n"
           "2026-11-27 12:00:12.000 UTC [4244] FATAL:  recovery ended before configured recovery target was reached\n")
    job, _seen = drill(s3_client, bucket, aws_params, tmp_path, FakeServer(log, starts=False), server_up=False, target="lsn",
                       target_value="0/3000200")
    with pytest.raises(RestoreError) as info:
        job.execute()
    assert info.value.msg == ("The restored server stopped during recovery: recovery ended before configured "
                              "recovery target was reached")
    assert "WAL up to the target is not archived" in info.value.hint
    log_file = str(tmp_path / "drills" / RESTORE_ID) + ".log"
    assert os.listdir(tmp_path / "drills") == [] and not os.path.exists(log_file)


def test_verify_drill_keep_scratch(s3_client, bucket, aws_params, tmp_path, fake_queries):
    server = FakeServer(PG15_LOG)
    job, _seen = drill(s3_client, bucket, aws_params, tmp_path, server, keep_scratch=True, amcheck=False)
    result = job.execute()
    scratch = tmp_path / "drills" / RESTORE_ID
    assert scratch.is_dir() and "scratch_removed" not in result
    assert any("keep_scratch" in w and str(scratch) in w for w in result["restore_warnings"])
    assert not any(c[0].endswith("pg_amcheck") for c in server.calls)
    assert not any(c[-1] == "stop" for c in server.calls)


# --------------------------------------------------------------------------
# Recovery log
# --------------------------------------------------------------------------

PG15_LOG = """\
2026-11-27 12:00:10.001 UTC [4242] LOG:  starting PostgreSQL 15.4 (Debian 15.4-1.pgdg120+1) on x86_64-pc-linux-gnu
2026-11-27 12:00:10.010 UTC [4244] LOG:  database system was interrupted; last known up at 2026-11-27 10:00:00 UTC
2026-11-27 12:00:10.120 UTC [4244] LOG:  starting point-in-time recovery to 2026-11-27 12:00:01.5+00
2026-11-27 12:00:10.300 UTC [4244] LOG:  restored log file "000000010000000000000003" from archive
2026-11-27 12:00:10.320 UTC [4244] LOG:  redo starts at 0/3000028
2026-11-27 12:00:10.400 UTC [4244] LOG:  consistent recovery state reached at 0/3000138
2026-11-27 12:00:10.401 UTC [4242] LOG:  database system is ready to accept read-only connections
2026-11-27 12:00:10.900 UTC [4244] LOG:  recovery stopping before commit of transaction 812, time 2026-11-27 12:00:01.5+00
2026-11-27 12:00:10.900 UTC [4244] LOG:  redo done at 0/4000A10 system usage: CPU: user: 0.01 s, system: 0.00 s, elapsed: 0.58 s
2026-11-27 12:00:10.900 UTC [4244] LOG:  last completed transaction was at log time 2026-11-27 12:00:00.9+00
2026-11-27 12:00:10.950 UTC [4244] LOG:  selected new timeline ID: 2
2026-11-27 12:00:11.010 UTC [4244] LOG:  archive recovery complete
2026-11-27 12:00:11.100 UTC [4242] LOG:  database system is ready to accept connections
"""


def test_recovery_facts_pg15_promote():
    facts = restore.recovery_facts(PG15_LOG)
    assert facts == {
        "consistent": "0/3000138",
        "stopping": "before commit of transaction 812, time 2026-11-27 12:00:01.5+00",
        "redo_done": "0/4000A10",
        "last_transaction": "2026-11-27 12:00:00.9+00",
        "new_timeline": "2",
        "archive_recovery_complete": "archive recovery complete",
        "ready": True,
    }


def test_recovery_facts_pause_and_fatal():
    log = ("LOG:  consistent recovery state reached at 0/3000138\n"
           "LOG:  recovery stopping after reaching consistency\n"
           "LOG:  pausing at the end of recovery\n"
           "HINT:  Execute pg_wal_replay_resume() to promote.\n")
    facts = restore.recovery_facts(log)
    assert facts["paused"] == "pausing at the end of recovery"
    assert facts["stopping"] == "after reaching consistency" and "fatal" not in facts
    log = ("2026-11-27 12:00:10.300 UTC [4244] LOG:  redo starts at 0/3000028\n"
           "2026-11-27 12:00:12.000 UTC [4244] FATAL:  recovery ended before configured recovery target was "
           "reached\n"
           "2026-11-27 12:00:12.001 UTC [4242] LOG:  startup process (PID 4244) exited with exit code 1\n"
           "2026-11-27 12:00:12.002 UTC [4242] PANIC:  could not locate a valid checkpoint record\n")
    facts = restore.recovery_facts(log)
    assert facts == {"fatal": ["recovery ended before configured recovery target was reached",
                               "could not locate a valid checkpoint record"]}
    assert restore.recovery_facts("") == {}


def test_recovery_facts_later_lines_win():
    log = "LOG:  selected new timeline ID: 2\nLOG:  selected new timeline ID: 3\n" \
          "LOG:  recovery has paused\n"
    facts = restore.recovery_facts(log)
    assert facts["new_timeline"] == "3" and facts["paused"] == "recovery has paused"


# --------------------------------------------------------------------------
# The download pipeline (_HashingStream): hashing, decompression and errors across its threads
# --------------------------------------------------------------------------


class _Body:
    """An S3 body stand-in that fails after ``fail_after`` bytes and counts how much was read."""

    def __init__(self, data, fail_after=None):
        self.data = io.BytesIO(data)
        self.fail_after = fail_after
        self.done = 0

    def read(self, size):
        if self.fail_after is not None and self.done >= self.fail_after:
            raise ConnectionResetError("connection reset by the endpoint")
        chunk = self.data.read(size)
        self.done += len(chunk)
        return chunk


def _compressed(method, data):
    compressor = new_compressor(method)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("method", ["none", "gzip", "zstd", "lz4"])
def test_pipeline_returns_the_plain_bytes_and_the_stored_sha(method):
    plain = b"".join(b"row %08d of a compressible table\n" % i for i in range(200000))
    stored = _compressed(method, plain)
    stream = restore._HashingStream(_Body(stored), method, read_chunk=4096, depth=2)  # pylint: disable=protected-access
    try:
        out = bytearray()
        while True:
            piece = stream.read(7777)
            if not piece:
                break
            out += piece
    finally:
        stream.close()
    assert bytes(out) == plain
    assert stream.sha.hexdigest() == hashlib.sha256(stored).hexdigest()
    assert stream.stored == len(stored) and stream.raw == len(plain)


def test_pipeline_raises_the_download_error_in_the_reader_and_stops():
    stored = _compressed("zstd", os.urandom(1 << 20))
    stream = restore._HashingStream(_Body(stored, fail_after=65536), "zstd", read_chunk=8192)  # pylint: disable=protected-access
    with pytest.raises(ConnectionResetError, match="connection reset"):
        while stream.read(4096):
            pass
    stream.close()
    assert not any(thread.is_alive() for thread in stream._threads)  # pylint: disable=protected-access


def test_pipeline_reading_stops_when_the_consumer_gives_up():
    stored = _compressed("none", os.urandom(4 << 20))
    body = _Body(stored)
    stream = restore._HashingStream(body, "none", read_chunk=4096, depth=2)  # pylint: disable=protected-access
    assert len(stream.read(10000)) == 10000
    stream.close()
    assert not any(thread.is_alive() for thread in stream._threads)  # pylint: disable=protected-access
    # Bounded: the download stopped a few pieces ahead of the consumer, not at the end of the object.
    assert body.done < 64 * 4096


def test_corrupt_compressed_data_names_the_object(s3_client, bucket, tmp_path):  # noqa: F811 pylint: disable=redefined-outer-name
    stored = b"\x28\xb5\x2f\xfd" + b"garbage" * 1000
    s3_client.put_object(Bucket=bucket, Key="b/base.tar.zst", Body=stored)
    record = {"backup_id": "x", "bucket": bucket, "compression": {"method": "zstd"},
              "objects": [{"role": "base", "key": "b/base.tar.zst", "size": len(stored),
                           "sha256": hashlib.sha256(stored).hexdigest()}]}
    with pytest.raises(restore.RestoreError, match=r"Unpacking s3://%s/b/base.tar.zst failed" % bucket):
        restore.download_backup(s3_client, record, str(tmp_path))


@pytest.mark.parametrize("text", ["2026-11-27 03:15:00 UTC", "2026-11-27T03:15:00z"])
def test_parse_time_zone_spellings_the_target_does_not_take(text):
    """The shared lenient parser reads these; a recovery target still needs Z or a numeric offset."""
    assert catalog.parse_time(text) is not None
    with pytest.raises(InvalidValueError, match="no time zone"):
        restore.parse_time(text)


def test_finished_times_of_catalog_records():
    utc = datetime.timezone.utc
    assert restore._finished({"finished_at": "2026-11-27T03:15:00.5Z"}) == datetime.datetime(  # pylint: disable=protected-access
        2026, 11, 27, 3, 15, 0, 500000, tzinfo=utc)
    assert restore._finished({"finished_at": "2026-11-27T03:15:00"}).tzinfo is utc  # pylint: disable=protected-access
    assert restore._finished({"finished_at": ""}) is None  # pylint: disable=protected-access
    assert restore._finished({}) is None  # pylint: disable=protected-access
