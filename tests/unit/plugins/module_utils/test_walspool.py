# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of module_utils/walspool.py (markers, ready-file selection, the batch runner)."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from ansible_collections.rtx.dr.plugins.module_utils import walspool
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError


def make_wal(tmp_path, names, ready=True):
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True, exist_ok=True)
    for name in names:
        (wal / name).write_bytes(name.encode() * 10)
        (wal / "archive_status" / (name + (".ready" if ready else ".done"))).write_bytes(b"")
    return wal


def test_ready_files_order_limit_and_exclusions(tmp_path):
    names = ["000000010000000000000005", "000000010000000000000003", "00000002.history",
             "000000010000000000000004.partial", "000000010000000000000004.00000028.backup"]
    wal = make_wal(tmp_path, names)
    make_wal(tmp_path, ["000000010000000000000001"], ready=False)  # .done: already archived
    (wal / "archive_status" / "000000010000000000000009.ready").write_bytes(b"")  # WAL file gone
    (wal / "archive_status" / "garbage.ready").write_bytes(b"")
    markers = walspool.Markers(str(tmp_path))
    markers.record("000000010000000000000005", 1, "x", "k")
    current = str(wal / "000000010000000000000003")
    got = [os.path.basename(p) for p in walspool.ready_files(current, 10, markers)]
    assert got == ["00000002.history", "000000010000000000000004.00000028.backup", "000000010000000000000004.partial"]
    assert [os.path.basename(p) for p in walspool.ready_files(current, 1, markers)] == ["00000002.history"]
    assert walspool.ready_files(current, 0, markers) == []
    assert walspool.ready_files(str(tmp_path / "nowhere" / "x"), 5) == []


def test_marker_consumed_only_for_the_same_bytes(tmp_path):
    wal = make_wal(tmp_path, ["000000010000000000000003"])
    path = str(wal / "000000010000000000000003")
    size, sha = walspool.file_sha256(path)
    assert sha == hashlib.sha256(open(path, "rb").read()).hexdigest()
    markers = walspool.Markers(str(tmp_path))
    markers.record(path, size, sha, "p/wal/00000001/000000010000000000000003.zst")
    assert markers.consume(path)["key"].endswith(".zst")
    assert markers.consume(path) is None  # answered once
    markers.record(path, size, "0" * 64, "k")
    assert markers.consume(path) is None and not markers.has(path)  # stale: removed, not trusted
    markers.record(path, size + 1, sha, "k")
    assert markers.consume(path) is None
    (tmp_path / "000000010000000000000003.pushed").write_text("not json")
    assert markers.consume(path) is None and not markers.has(path)


def test_prune_removes_old_markers_only(tmp_path):
    markers = walspool.Markers(str(tmp_path))
    markers.record("000000010000000000000003", 1, "a", "k")
    markers.record("000000010000000000000004", 1, "b", "k")
    old = time.time() - walspool.STALE_SECONDS - 10
    os.utime(markers.path("000000010000000000000003"), (old, old))
    (tmp_path / "unrelated").write_text("x")
    assert markers.prune() == ["000000010000000000000003.pushed"]
    assert sorted(os.listdir(tmp_path)) == ["000000010000000000000004.pushed", "unrelated"]


def test_push_batch_markers_for_successes_warning_for_failures(tmp_path):
    markers = walspool.Markers(str(tmp_path))
    lock = threading.Lock()
    running = {"now": 0, "max": 0}
    warnings = []

    class Log:
        def __call__(self, msg):
            pass

        def warning(self, msg):
            warnings.append(msg)

    def push_one(path):
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        time.sleep(0.05)
        with lock:
            running["now"] -= 1
        if path.endswith("bad"):
            raise RtxDrError("boom for %s" % path)
        return {"bytes": 3, "sha256": "s-" + path, "key": "k/" + path}

    result = walspool.push_batch(push_one, "w/a", ["w/b", "w/bad", "w/c"], 2, markers, Log())
    assert result["key"] == "k/w/a" and result["pushed_ahead"] == ["b", "c"]
    assert running["max"] == 2
    assert sorted(os.listdir(tmp_path)) == ["b.pushed", "c.pushed"]
    assert len(warnings) == 1 and "w/bad ahead of PostgreSQL failed" in warnings[0] and "boom" in warnings[0]

    with pytest.raises(RtxDrError, match="boom for w/bad"):  # the asked file's error is the call's error
        walspool.push_batch(push_one, "w/bad", ["w/d"], 2, markers, Log())
    assert os.path.exists(markers.path("d"))  # the others still got their markers


@pytest.mark.parametrize("params, needle", [
    ({"push_batch": 2}, "needs spool_dir"),
    ({"push_batch": 0, "spool_dir": "/x"}, "push_batch 0"),
    ({"push_batch": 65, "spool_dir": "/x"}, "push_batch 65"),
    ({"push_parallel": 0}, "push_parallel 0"),
])
def test_check_spool_options(params, needle):
    with pytest.raises(InvalidValueError, match=needle):
        walspool.check_spool_options(params)


def test_check_spool_options_defaults():
    assert walspool.check_spool_options({}) == (None, 1, 1)
    assert walspool.check_spool_options({"push_batch": 8, "push_parallel": 2, "spool_dir": "/s"}) == ("/s", 8, 2)
