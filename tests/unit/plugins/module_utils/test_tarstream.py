# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarObserver
from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarStreamError

MANIFEST = b'{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": []}\n'
LABEL = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n"
LONG = "base/16384/" + "x" * 180 + "/file_with_a_long_name_" + "y" * 60


def make_tar(fmt, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            if data is None:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def members_fixture():
    return [
        ("global", None),
        ("global/pg_control", os.urandom(8192)),
        ("base/1/1259", os.urandom(1000)),  # not a multiple of 512
        ("empty", b""),
        (LONG, os.urandom(3000)),
        ("pg_wal/000000010000000000000002", os.urandom(70000)),
        ("backup_label", LABEL),
        ("backup_manifest", MANIFEST),
    ]


def observe(data, chunk):
    obs = TarObserver()
    for pos in range(0, len(data), chunk):
        obs.feed(data[pos:pos + chunk])
    obs.close()
    return obs


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("chunk", [1, 511, 512, 513, 1 << 20])
def test_members_and_capture(fmt, chunk):
    members = members_fixture()
    if fmt == tarfile.USTAR_FORMAT:
        members = [m for m in members if m[0] != LONG]  # ustar cannot hold it
        members.append(("a" * 90 + "/" + "b" * 90, b"prefix field"))  # uses the ustar prefix field
    data = make_tar(fmt, members)
    obs = observe(data, chunk)
    assert obs.finished
    got = [(m["name"], m["size"]) for m in obs.members]
    expected = [(n, 0 if d is None else len(d)) for n, d in members]
    assert got == expected
    assert obs.captured == {"backup_label": LABEL, "backup_manifest": MANIFEST}
    assert obs.file_count == sum(1 for _n, d in members if d is not None)
    assert obs.file_bytes == sum(len(d) for _n, d in members if d is not None)
    assert obs.bytes_seen == len(data)


def test_pax_size_override_and_large_member():
    big = os.urandom(3 * 1024 * 1024 + 17)
    data = make_tar(tarfile.PAX_FORMAT, [("./backup_manifest", MANIFEST), ("big", big)])
    obs = observe(data, 65536)
    assert obs.captured["backup_manifest"] == MANIFEST
    assert obs.members[-1] == {"name": "big", "type": "file", "size": len(big)}


def test_pax_long_name_with_non_ascii():
    name = "base/" + "é" * 120
    data = make_tar(tarfile.PAX_FORMAT, [(name, b"x")])
    obs = observe(data, 100)
    assert obs.members[0]["name"] == name


def test_memory_not_used_for_content():
    data = make_tar(tarfile.GNU_FORMAT, [("big", b"\1" * (4 << 20))])
    obs = TarObserver(keep_members=False)
    obs.feed(data)
    obs.close()
    assert obs.members == [] and obs.file_bytes == 4 << 20 and obs.captured == {}


def test_truncated_stream_is_detected():
    data = make_tar(tarfile.PAX_FORMAT, members_fixture())
    obs = TarObserver()
    obs.feed(data[:5000])
    with pytest.raises(TarStreamError):
        obs.close()
    obs = TarObserver()
    body = data.rstrip(b"\0")
    obs.feed(body + b"\0" * ((-len(body)) % 512))  # no end-of-archive marker
    assert not obs.finished
    with pytest.raises(TarStreamError):
        obs.close()


def test_garbage_is_rejected():
    obs = TarObserver()
    with pytest.raises(TarStreamError):
        obs.feed(os.urandom(1024))


def test_capture_limit():
    data = make_tar(tarfile.PAX_FORMAT, [("backup_manifest", b"x" * 2000)])
    obs = TarObserver(max_capture_bytes=1000)
    with pytest.raises(TarStreamError):
        obs.feed(data)
