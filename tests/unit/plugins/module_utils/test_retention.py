# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""plan_retention() with synthetic catalog records: no I/O."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.rtx.dr.plugins.module_utils import catalog
from ansible_collections.rtx.dr.plugins.module_utils import retention
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def rec(days_ago, kind="physical", status="complete", start_wal=None, timeline=1, hours=0.0, duration_minutes=5):
    """A record of a backup started ``days_ago`` days (+ ``hours``) before NOW."""
    started = NOW - datetime.timedelta(days=days_ago, hours=hours)
    finished = started + datetime.timedelta(minutes=duration_minutes)
    record = {
        "format_version": 1,
        "backup_id": catalog.new_backup_id(kind, started),
        "kind": kind,
        "status": status,
        "started_at": catalog.isoformat(started),
        "finished_at": None if status == "running" else catalog.isoformat(finished),
        "timeline": timeline if kind == "physical" else None,
        "start_wal": start_wal,
        "objects": [],
    }
    return record


def ids(items):
    return [i["backup_id"] for i in items]


def policy(pk=7, pd=7, pitr=7, lk=7, ld=2555, stale=24):
    return {"physical": {"keep_last": pk, "keep_days": pd, "pitr_window_days": pitr},
            "logical": {"keep_last": lk, "keep_days": ld}, "stale_running_hours": stale}


def daily_physical(n, timeline=1):
    """n daily physical backups, 0..n-1 days old, start_wal increasing with time."""
    return [rec(d, start_wal="%08X%08X%08X" % (timeline, 0, 100 - d), timeline=timeline) for d in range(n)]


def test_no_records():
    plan = retention.plan_retention([], NOW, policy())
    assert plan["keep"] == [] and plan["delete"] == [] and plan["wal_keep_from"] is None
    assert plan["wal_delete_keys"] == []


def test_only_one_backup_survives_the_harshest_policy():
    only = rec(400, start_wal="000000010000000000000005")
    plan = retention.plan_retention([only], NOW, policy(pk=1, pd=0, pitr=0, lk=0, ld=0))
    assert ids(plan["keep"]) == [only["backup_id"]] and plan["delete"] == []
    assert "newest complete physical backup (always kept)" in plan["keep"][0]["reasons"]
    assert plan["wal_keep_from"]["segment"] == "000000010000000000000005"


def test_all_old_keeps_newest_n_and_pitr_base():
    records = [rec(30 + d, start_wal="0000000100000000000000%02X" % (60 - d)) for d in range(10)]
    plan = retention.plan_retention(records, NOW, policy(pk=3, pd=7, pitr=7))
    # all are older than the window: the newest (30 d) is also the PITR base
    assert ids(plan["keep"]) == ids(records[:3])
    assert ids(plan["delete"]) == ids(records[3:])
    assert any(r.startswith("PITR base") for r in plan["keep"][0]["reasons"])
    assert plan["wal_keep_from"] == {"backup_id": records[2]["backup_id"], "segment": "00000001000000000000003A",
                                     "timeline": 1}
    assert all("older than every keep rule" in d["reason"] for d in plan["delete"])


def test_keep_days_and_pitr_base_before_the_window():
    records = daily_physical(20)  # 0..19 days old
    plan = retention.plan_retention(records, NOW, policy(pk=2, pd=5, pitr=10))
    kept = ids(plan["keep"])
    # finished within 5 days: started 0..5 days ago (finished 5 minutes later)
    assert kept[:6] == ids(records[:6])
    # PITR base: newest finished at or before NOW - 10 days -> the one started 11 days ago
    # (the one started 10 days ago finished 5 minutes after the window start)
    assert kept[6:] == [records[11]["backup_id"]]
    base = next(k for k in plan["keep"] if k["backup_id"] == records[11]["backup_id"])
    assert base["reasons"][0].startswith("PITR base: newest complete backup finished at or before")
    assert set(ids(plan["delete"])) == set(ids(records)) - set(kept)
    assert plan["wal_keep_from"]["backup_id"] == records[11]["backup_id"]
    assert plan["wal_keep_from"]["segment"] == "%08X%08X%08X" % (1, 0, 89)


def test_pitr_base_when_all_backups_are_inside_the_window():
    records = daily_physical(4)  # 0..3 days old, window 7 days
    plan = retention.plan_retention(records, NOW, policy(pk=1, pd=0, pitr=7))
    assert ids(plan["keep"]) == [records[0]["backup_id"], records[3]["backup_id"]]
    assert "PITR base: oldest complete backup" in plan["keep"][1]["reason"]
    assert ids(plan["delete"]) == [records[1]["backup_id"], records[2]["backup_id"]]


def test_pitr_window_zero_keeps_no_extra_base():
    records = daily_physical(4)
    plan = retention.plan_retention(records, NOW, policy(pk=1, pd=0, pitr=0))
    assert ids(plan["keep"]) == [records[0]["backup_id"]]
    assert plan["wal_keep_from"]["backup_id"] == records[0]["backup_id"]


def test_mixed_kinds_are_independent():
    physical = daily_physical(10)
    logical = [rec(d * 30, kind="logical") for d in range(5)]  # 0, 30, ..., 120 days old
    plan = retention.plan_retention(physical + logical, NOW, policy(pk=2, pd=2, pitr=0, lk=2, ld=60))
    kept = set(ids(plan["keep"]))
    assert kept == set(ids(physical[:3])) | set(ids(logical[:3]))  # logical: 0, 30 (keep_last), 60 finished later
    # logical deletions never affect WAL
    assert plan["wal_keep_from"]["backup_id"] == physical[2]["backup_id"]
    # lists are newest first across kinds
    keep_times = [catalog.parse_backup_id(i)[0] for i in ids(plan["keep"])]
    assert keep_times == sorted(keep_times, reverse=True)


def test_newest_logical_kept_with_keep_last_zero():
    logical = [rec(d, kind="logical") for d in (10, 20)]
    plan = retention.plan_retention(logical, NOW, policy(lk=0, ld=0))
    assert ids(plan["keep"]) == [logical[0]["backup_id"]] and ids(plan["delete"]) == [logical[1]["backup_id"]]


def test_newest_complete_kept_even_when_newer_ones_failed():
    good = rec(50, start_wal="000000010000000000000010")
    failed = [rec(d, status="failed") for d in (1, 2, 60)]
    plan = retention.plan_retention([good] + failed, NOW, policy(pk=1, pd=0, pitr=0))
    assert good["backup_id"] in ids(plan["keep"])
    # horizon = min(now - 0 days, oldest kept (50 d)) -> only the 60-day-old failed record goes
    assert ids(plan["delete"]) == [failed[2]["backup_id"]]
    assert "failed, older than the retention horizon" in plan["delete"][0]["reason"]
    recent = [k for k in plan["keep"] if k["status"] == "failed"]
    assert len(recent) == 2 and all("within the retention horizon" in k["reason"] for k in recent)


def test_running_records():
    fresh = rec(0, status="running", hours=2)
    stale_recent = rec(2, status="running")
    stale_old = rec(40, status="running")
    newest = rec(0, start_wal="000000010000000000000050", hours=1)
    plan = retention.plan_retention([fresh, stale_recent, stale_old, newest], NOW, policy(pk=1, pd=7, pitr=0))
    assert set(ids(plan["keep"])) == {fresh["backup_id"], stale_recent["backup_id"], newest["backup_id"]}
    assert ids(plan["delete"]) == [stale_old["backup_id"]]
    assert "abandoned" in plan["delete"][0]["reason"]
    fresh_entry = next(k for k in plan["keep"] if k["backup_id"] == fresh["backup_id"])
    assert "never touched" in fresh_entry["reason"]
    # a running backup is never touched even with a huge age when it is within stale_running_hours
    plan = retention.plan_retention([rec(3, status="running")], NOW, policy(pd=0, stale=24 * 5))
    assert plan["delete"] == []


def test_deleting_and_unknown_statuses():
    newest = rec(0, start_wal="000000010000000000000050")
    interrupted = rec(1, status="deleting")
    odd = rec(900, status="planned")
    unreadable = {"backup_id": rec(800)["backup_id"], "status": "unreadable"}
    plan = retention.plan_retention([newest, interrupted, odd, unreadable], NOW, policy())
    assert ids(plan["delete"]) == [interrupted["backup_id"]]
    assert "interrupted retention run" in plan["delete"][0]["reason"]
    assert set(ids(plan["keep"])) == {newest["backup_id"], odd["backup_id"], unreadable["backup_id"]}


def test_duplicates_and_bad_ids_ignored():
    one = rec(1, start_wal="000000010000000000000050")
    plan = retention.plan_retention([one, dict(one), {"backup_id": "nope"}, "junk"], NOW, policy())
    assert ids(plan["keep"]) == [one["backup_id"]]


def test_naive_now_is_utc_and_deterministic():
    records = daily_physical(12)
    a = retention.plan_retention(records, NOW, policy(pk=2, pd=3))
    b = retention.plan_retention(list(reversed(records)), NOW.replace(tzinfo=None), policy(pk=2, pd=3))
    assert a == b


def test_wal_keys_across_timelines():
    old = rec(20, start_wal="000000010000000000000010", timeline=1)
    kept = rec(5, start_wal="000000020000000000000030", timeline=2)
    newest = rec(0, start_wal="000000030000000000000040", timeline=3)
    wal = "pgbackup/main/wal/"
    keys = [
        wal + "000000010000000000000010.zst",        # TL1, earlier position: goes
        wal + "00000001000000000000002F",            # TL1, earlier: goes
        wal + "000000010000000000000031.zst",        # TL1 after the start position: kept (conservative)
        wal + "00000002000000000000002F.zst",        # TL2 earlier: goes
        wal + "000000020000000000000030.zst",        # the start segment itself: kept
        wal + "000000020000000000000030.00000028.backup",  # kept
        wal + "00000002.history",                    # history: always kept
        wal + "00000001/000000010000000000000001",   # <timeline>/<segment> layout: goes
        wal + "000000030000000000000001",            # newer timeline: kept
        wal + "000000010000000000000001.partial",    # TL1 partial, earlier: goes
        wal + "README",                              # not WAL: kept
        wal + "000000010000000000000001X",           # not a WAL name: kept
    ]
    plan = retention.plan_retention([old, kept, newest], NOW, policy(pk=2, pd=0, pitr=0), wal_keys=keys)
    assert ids(plan["delete"]) == [old["backup_id"]]
    assert plan["wal_keep_from"] == {"backup_id": kept["backup_id"], "segment": "000000020000000000000030",
                                     "timeline": 2}
    assert plan["wal_delete_keys"] == sorted([keys[0], keys[1], keys[3], keys[7], keys[9]])


def test_no_wal_deleted_without_start_wal_or_physical_backup():
    keys = ["p/wal/000000010000000000000001"]
    plan = retention.plan_retention([rec(0)], NOW, policy(), wal_keys=keys)  # start_wal None
    assert plan["wal_keep_from"] is None and plan["wal_delete_keys"] == []
    plan = retention.plan_retention([rec(0, kind="logical")], NOW, policy(), wal_keys=keys)
    assert plan["wal_keep_from"] is None and plan["wal_delete_keys"] == []
    plan = retention.plan_retention([rec(0, status="failed", start_wal="000000010000000000000009")], NOW, policy(),
                                    wal_keys=keys)
    assert plan["wal_keep_from"] is None and plan["wal_delete_keys"] == []


@pytest.mark.parametrize("pol, needle", [
    ({"physical": {"keep_last": 0}}, "physical_keep_last 0: must be 1 or more"),
    ({"physical": {"keep_days": -1}}, "physical_keep_days -1"),
    ({"physical": {"pitr_window_days": -3}}, "pitr_window_days -3"),
    ({"logical": {"keep_last": -1}}, "logical_keep_last -1"),
    ({"logical": {"keep_days": "x"}}, "logical_keep_days 'x': expected a whole number"),
    ({"physical": {"keep_last": True}}, "physical_keep_last True"),
    ({"stale_running_hours": 0}, "stale_running_hours 0"),
])
def test_policy_errors(pol, needle):
    with pytest.raises(InvalidValueError) as info:
        retention.plan_retention([], NOW, pol)
    assert needle in info.value.msg and info.value.hint


def test_policy_defaults_and_params():
    assert retention.normalize_policy(None) == retention.DEFAULT_POLICY
    assert retention.policy_from_params({"physical_keep_last": 3, "logical_keep_days": 30}) == {
        "physical": {"keep_last": 3, "keep_days": 7, "pitr_window_days": 7},
        "logical": {"keep_last": 7, "keep_days": 30}, "stale_running_hours": 24}


def test_wal_key_deletable():
    assert retention.wal_key_deletable("w/000000010000000000000001", "000000010000000000000002")
    assert not retention.wal_key_deletable("w/000000010000000000000002", "000000010000000000000002")
    assert not retention.wal_key_deletable("w/000000010000000000000001", None)
    assert retention.wal_key_deletable("w/00000001000000000000000a.gz", "00000001000000000000000B")
