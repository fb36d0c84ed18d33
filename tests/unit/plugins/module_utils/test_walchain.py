# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of module_utils/walchain.py: history files, timeline paths, the archive listing, chains and gaps.

The pure functions are tested on hand-made listings; list_archive/read_history against a moto server.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import walchain  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.verify import read_only_s3  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.walchain import WalGapError  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
SEG = 16 * MIB
PREFIX = "pgbackup/chaintest"
WAL = PREFIX + "/wal/"
T0 = datetime.datetime(2026, 11, 27, 3, 0, tzinfo=datetime.timezone.utc)

HISTORY_3 = (
    "# comment line\n"
    "\n"
    "1\t0/3000060\tno recovery target specified\n"
    "   \n"
    "2\t0/6000000\tat restore point \"before upgrade\"\n"
)


def name(timeline, segno, size=SEG):
    return walchain.segment_name(timeline, segno, size)


def key(segment, suffix=""):
    return "%s%s/%s%s" % (WAL, segment[:8], segment, suffix)


def at(minutes):
    return T0 + datetime.timedelta(minutes=minutes)


def listing_of(*entries, size=SEG):
    """A listing from ``(key, minutes)`` pairs or plain segment names (archived at minute = segno)."""
    listing = walchain.ArchiveListing("bkt", PREFIX, size)
    for entry in entries:
        if isinstance(entry, tuple):
            listing.add(entry[0], 10, at(entry[1]) if entry[1] is not None else None)
        else:
            segno = int(entry[8:16], 16) * (0x100000000 // size) + int(entry[16:], 16)
            listing.add(key(entry), 10, at(segno))
    return listing


def path_of(target, history_text=""):
    return walchain.timeline_path(target, walchain.parse_history(history_text, target))


# --------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------


def test_segment_name_and_segno():
    assert name(1, 3) == "000000010000000000000003"
    assert name(0x1A, 0x1FF) == "0000001A00000001000000FF"
    assert name(1, 4096, MIB) == "000000010000000100000000"
    assert walchain.segno_of("0/3000060") == 3
    assert walchain.segno_of("1/0") == 256
    assert walchain.segno_of("0/3000000") == 3
    assert walchain.segno_of(5 * MIB, MIB) == 5
    assert walchain.lsn_text(None) is None
    assert walchain.lsn_text(0x3000060) == "0/3000060"


# --------------------------------------------------------------------------
# parse_history
# --------------------------------------------------------------------------


def test_parse_history_skips_comments_and_blank_lines():
    entries = walchain.parse_history(HISTORY_3, 3)
    assert entries == [(1, 0x3000060, "no recovery target specified"),
                       (2, 0x6000000, "at restore point \"before upgrade\"")]


def test_parse_history_bytes_spaces_and_missing_reason():
    assert walchain.parse_history(b"1 0/3000060\n", 2) == [(1, 0x3000060, "")]
    assert walchain.parse_history("1\t1/A0\tx y  z\n") == [(1, (1 << 32) | 0xA0, "x y  z")]
    assert walchain.parse_history("") == []
    assert walchain.parse_history("# only a comment\n", 2) == []


@pytest.mark.parametrize("text,line,words", [
    ("x\t0/3000060\treason\n", 1, "is not '<timeline> <switch LSN> <reason>'"),
    ("1\n", 1, "is not"),
    ("1\tnot-an-lsn\treason\n", 1, "is not"),
    ("1\t0/3000060\n1\t0/4000000\n", 2, "timeline 1 does not follow timeline 1"),
    ("2\t0/3000060\n1\t0/4000000\n", 2, "timeline 1 does not follow timeline 2"),
    ("1\t0/3000060\n3\t0/4000000\n", 2, "parent timeline 3 is not below 3"),
    ("0\t0/3000060\n", 1, "timeline 0 does not exist"),
    ("-1\t0/3000060\n", 1, "does not exist"),
])
def test_parse_history_bad_lines(text, line, words):
    with pytest.raises(InvalidValueError) as info:
        walchain.parse_history(text, 3)
    assert "00000003.history line %d" % line in info.value.msg
    assert words in info.value.msg


def test_parse_history_without_timeline_names_the_file_generically():
    with pytest.raises(ValueError, match="timeline history file line 1"):
        walchain.parse_history("garbage\n")


# --------------------------------------------------------------------------
# timeline_path / timeline_at / timeline_for_segno
# --------------------------------------------------------------------------


def test_timeline_path_of_timeline_1():
    assert walchain.timeline_path(1, []) == [{"timeline": 1, "begin_lsn": 0, "end_lsn": None}]


def test_timeline_path_two_switches():
    assert path_of(3, HISTORY_3) == [
        {"timeline": 1, "begin_lsn": 0, "end_lsn": 0x3000060},
        {"timeline": 2, "begin_lsn": 0x3000060, "end_lsn": 0x6000000},
        {"timeline": 3, "begin_lsn": 0x6000000, "end_lsn": None},
    ]


def test_timeline_at_switch_point_is_the_new_timeline():
    path = path_of(3, HISTORY_3)
    assert walchain.timeline_at(path, "0/0") == 1
    assert walchain.timeline_at(path, "0/300005F") == 1
    assert walchain.timeline_at(path, "0/3000060") == 2
    assert walchain.timeline_at(path, "0/5FFFFFF") == 2
    assert walchain.timeline_at(path, 0x6000000) == 3
    assert walchain.timeline_at(path, "5/0") == 3


def test_timeline_for_segno_switch_inside_a_segment():
    # Switch at 0/3000060: segment 3 holds the switch point and is read from the NEW timeline.
    path = path_of(2, "1\t0/3000060\tx\n")
    assert [walchain.timeline_for_segno(path, n) for n in (0, 1, 2, 3, 4, 100)] == [1, 1, 1, 2, 2, 2]


def test_timeline_for_segno_switch_on_a_segment_boundary():
    # Switch at 0/6000000: segment 5 is complete on timeline 1, segment 6 is the first of timeline 2.
    path = path_of(2, "1\t0/6000000\tx\n")
    assert walchain.timeline_for_segno(path, 5) == 1
    assert walchain.timeline_for_segno(path, 6) == 2


def test_timeline_for_segno_two_switches_in_one_segment():
    # Timeline 2 lived inside segment 5 only: recovery reads segment 5 from timeline 3.
    path = path_of(3, "1\t0/5000028\tx\n2\t0/5000100\ty\n")
    assert walchain.timeline_for_segno(path, 4) == 1
    assert walchain.timeline_for_segno(path, 5) == 3
    assert walchain.timeline_for_segno(path, 6) == 3


def test_timeline_for_segno_other_segment_size():
    path = path_of(2, "1\t0/300060\tx\n")  # 1 MiB segments: segment 3
    assert walchain.timeline_for_segno(path, 2, MIB) == 1
    assert walchain.timeline_for_segno(path, 3, MIB) == 2


# --------------------------------------------------------------------------
# required_segments
# --------------------------------------------------------------------------


def test_required_segments_across_two_switches():
    path = path_of(3, HISTORY_3)
    assert walchain.required_segments(path, 1, 8) == [
        name(1, 1), name(1, 2),            # timeline 1 up to the segment before the first switch
        name(2, 3), name(2, 4), name(2, 5),  # the switch segment 3 and after from timeline 2
        name(3, 6), name(3, 7), name(3, 8),  # timeline 3 from its boundary start
    ]


def test_required_segments_across_a_log_id_boundary():
    path = path_of(2, "1\t1/1000000\tx\n")
    assert walchain.required_segments(path, 0xFE, 0x102) == [
        "0000000100000000000000FE", "0000000100000000000000FF", "000000010000000100000000",
        "000000020000000100000001", "000000020000000100000002"]


def test_required_segments_empty_and_too_long():
    path = path_of(1)
    assert walchain.required_segments(path, 5, 4) == []
    assert walchain.required_segments(path, 5, 5) == [name(1, 5)]
    with pytest.raises(InvalidValueError, match="too long"):
        walchain.required_segments(path, 0, walchain.MAX_CHAIN_SEGMENTS)
    assert len(walchain.required_segments(path, 0, 999)) == 1000


# --------------------------------------------------------------------------
# ArchiveListing.add
# --------------------------------------------------------------------------


def test_listing_classifies_keys():
    seg = name(1, 3)
    listing = walchain.ArchiveListing("bkt", PREFIX)
    entries = [
        (key(seg), 1), (key(name(1, 4), ".zst"), 2), (key(name(1, 5), ".lz4"), 3), (key(name(2, 5), ".gz"), 4),
        (key(name(1, 6), ".partial"), 5), (key(name(1, 7), ".partial.zst"), 6),
        (key(seg, ".00000028.backup"), 7), (WAL + "00000002.history", 8), (WAL + "0000000A.history", 8),
        (WAL + "README", 9), (key(name(1, 0xA).lower()), 9), (key(seg, ".bz2"), 9), (WAL + "0000000G.history", 9),
        (key("00000001000000000000000"), 9), (key("000000000000000000000003"), 9),
    ]
    for item, minute in entries:
        listing.add(item, 123, at(minute))
    assert sorted(listing.segments) == [seg, name(1, 4), name(1, 5), name(2, 5)]
    assert listing.segments[name(1, 4)] == {"key": key(name(1, 4), ".zst"), "size": 123, "last_modified": at(2)}
    assert listing.segments[name(2, 5)]["key"] == key(name(2, 5), ".gz")
    assert listing.partials == [name(1, 6) + ".partial", name(1, 7) + ".partial"]
    assert listing.backup_files == [seg + ".00000028.backup"]
    assert listing.histories == {2: WAL + "00000002.history", 10: WAL + "0000000A.history"}
    assert listing.other == [WAL + "README", key(name(1, 0xA).lower()), key(seg, ".bz2"), WAL + "0000000G.history",
                             key("00000001000000000000000"), key("000000000000000000000003")]
    assert listing.timelines() == [1, 2, 10]
    assert listing.latest_timeline() == 10


def test_listing_partial_never_counts_as_the_segment():
    listing = listing_of((key(name(1, 5), ".partial"), 1), (key(name(1, 6), ".partial.gz"), 1))
    assert listing.segments == {}
    assert listing.newest_segment() is None
    assert listing.latest_timeline() is None


def test_listing_keeps_the_first_archived_copy():
    seg = name(1, 3)
    listing = listing_of((key(seg, ".zst"), 5), (key(seg), 2), (key(seg, ".gz"), 9))
    assert listing.segments[seg]["key"] == key(seg)
    # no time at all never wins over a time, and does not break the comparison
    listing = listing_of((key(seg, ".zst"), None), (key(seg), 4), (key(seg, ".gz"), None))
    assert listing.segments[seg]["key"] == key(seg)
    listing = listing_of((key(seg, ".zst"), None), (key(seg, ".gz"), None))
    assert listing.segments[seg]["key"] == key(seg, ".zst")


def test_listing_newest_segment_and_segment_size():
    listing = listing_of(name(1, 7), name(2, 7), name(2, 6), name(1, 0x100))
    assert listing.newest_segment() == name(1, 0x100)
    listing = listing_of(name(1, 7), name(2, 7), name(2, 6))
    assert listing.newest_segment() == name(2, 7)
    # segment part 0x1000 does not exist with 1 MiB segments (4096 per log id): not a segment
    small = walchain.ArchiveListing("bkt", PREFIX, MIB)
    small.add(key("000000010000000000001000"), 1, at(0))
    small.add(key("000000010000000000000FFF"), 1, at(0))
    assert list(small.segments) == ["000000010000000000000FFF"]
    assert small.other == [key("000000010000000000001000")]


# --------------------------------------------------------------------------
# check_chain
# --------------------------------------------------------------------------


def test_chain_without_gap():
    listing = listing_of(*[name(1, n) for n in range(1, 7)])
    chain = walchain.check_chain(listing, path_of(1), "0/2000100")
    assert chain == {
        "first": name(1, 2), "last": name(1, 6), "needed": 5, "present": 5, "missing": [], "first_missing": None,
        "contiguous_until": name(1, 6), "contiguous_until_time": at(6), "end_reached": True,
        "latest_archived": name(1, 6), "latest_archived_time": at(6),
    }


def test_chain_gap_names_the_first_missing_segment():
    listing = listing_of(*[name(1, n) for n in (2, 3, 6, 8, 9)])
    chain = walchain.check_chain(listing, path_of(1), "0/2000100")
    assert chain["missing"] == [name(1, 4), name(1, 5), name(1, 7)]
    assert chain["first_missing"] == name(1, 4)
    assert chain["contiguous_until"] == name(1, 3)
    assert chain["contiguous_until_time"] == at(3)
    assert chain["needed"] == 8 and chain["present"] == 5
    assert chain["latest_archived"] == name(1, 9)
    assert chain["end_reached"] is True
    message = walchain.describe_gap(chain, listing)
    assert message.startswith("3 WAL segment(s) missing from the archive s3://bkt/%s: %s, %s, %s"
                              % (WAL, name(1, 4), name(1, 5), name(1, 7)))
    assert "contiguous up to %s" % name(1, 3) in message


def test_chain_first_segment_missing():
    listing = listing_of(name(1, 3), name(1, 4))
    chain = walchain.check_chain(listing, path_of(1), "0/2000100")
    assert chain["missing"] == [name(1, 2)]
    assert chain["contiguous_until"] is None and chain["contiguous_until_time"] is None
    assert "contiguous" not in walchain.describe_gap(chain, listing)


def test_describe_gap_shortens_long_lists():
    listing = listing_of(name(1, 20))
    chain = walchain.check_chain(listing, path_of(1), "0/1000000")
    assert len(chain["missing"]) == 19
    message = walchain.describe_gap(chain, listing, limit=3)
    assert "%s, %s, %s and 16 more" % (name(1, 1), name(1, 2), name(1, 3)) in message


def test_chain_across_a_promotion():
    # Timeline 1 up to segment 4 (+ the .partial of 5), timeline 2 from the switch segment 5.
    listing = listing_of(name(1, 2), name(1, 3), name(1, 4), (key(name(1, 5), ".partial"), 5),
                         name(2, 5), name(2, 6), name(2, 7), (WAL + "00000002.history", 5))
    path = path_of(2, "1\t0/5000060\tx\n")
    chain = walchain.check_chain(listing, path, "0/2000028")
    assert chain["missing"] == []
    assert chain["first"] == name(1, 2) and chain["last"] == name(2, 7)
    assert chain["needed"] == 6


def test_chain_switch_segment_is_read_from_the_new_timeline():
    # The old timeline's copies of segment 5 (.partial, or even a full one archived by the old primary
    # after the fork) do not replace the new timeline's segment 5.
    listing = listing_of(name(1, 3), name(1, 4), (key(name(1, 5), ".partial"), 5), name(1, 5), name(1, 6),
                         name(2, 6), name(2, 7))
    path = path_of(2, "1\t0/5000060\tx\n")
    chain = walchain.check_chain(listing, path, "0/3000000")
    assert chain["missing"] == [name(2, 5)]
    assert chain["contiguous_until"] == name(1, 4)
    assert chain["last"] == name(2, 7) and chain["latest_archived"] == name(2, 7)


def test_chain_ignores_segments_off_the_path():
    # Timeline 3 forked off timeline 1 (timeline 2 is an abandoned branch): its segments are not needed.
    listing = listing_of(name(1, 2), name(1, 3), name(1, 4), name(2, 4), name(2, 5), name(2, 6), name(3, 4),
                         name(3, 5), name(4, 9))
    path = path_of(3, "1\t0/4000100\tx\n")
    chain = walchain.check_chain(listing, path, "0/2000000")
    assert chain["missing"] == []
    assert chain["last"] == name(3, 5) and chain["latest_archived"] == name(3, 5)


def test_chain_across_two_switches_with_a_gap_on_the_middle_timeline():
    listing = listing_of(name(1, 1), name(1, 2), name(2, 3), name(2, 5), name(3, 6), name(3, 7))
    chain = walchain.check_chain(listing, path_of(3, HISTORY_3), "0/1000000")
    assert chain["missing"] == [name(2, 4)]
    assert chain["contiguous_until"] == name(2, 3)
    assert chain["last"] == name(3, 7)


def test_chain_end_lsn_beyond_the_archive():
    listing = listing_of(*[name(1, n) for n in range(2, 7)])
    chain = walchain.check_chain(listing, path_of(1), "0/2000000", end_lsn="0/9000100")
    assert chain["end_reached"] is False
    assert chain["missing"] == [name(1, 7)]  # the next segment only, not all up to 9
    assert chain["first_missing"] == name(1, 7) and chain["last"] == name(1, 7)
    assert chain["contiguous_until"] == name(1, 6)


def test_chain_end_lsn_inside_and_on_a_boundary():
    listing = listing_of(name(1, 2), name(1, 3), name(1, 4), name(1, 6))
    # end inside segment 3: the gap at 5 is after the end and not reported
    chain = walchain.check_chain(listing, path_of(1), "0/2000000", end_lsn="0/3000100")
    assert chain["missing"] == [] and chain["last"] == name(1, 3) and chain["end_reached"] is True
    # an end position on a boundary names the previous segment (like pg_walfile_name)
    chain = walchain.check_chain(listing, path_of(1), "0/2000000", end_lsn="0/5000000")
    assert chain["missing"] == [] and chain["last"] == name(1, 4) and chain["end_reached"] is True
    chain = walchain.check_chain(listing, path_of(1), "0/2000000", end_lsn="0/6000001")
    assert chain["missing"] == [name(1, 5)] and chain["last"] == name(1, 6) and chain["end_reached"] is True
    # an end before the start checks the start segment
    chain = walchain.check_chain(listing, path_of(1), "0/3000000", end_lsn="0/1000000")
    assert chain["first"] == chain["last"] == name(1, 3) and chain["missing"] == []


def test_chain_nothing_archived():
    listing = listing_of()
    chain = walchain.check_chain(listing, path_of(1), "0/2000000")
    assert chain["needed"] == 0 and chain["missing"] == [] and chain["first"] is None
    assert chain["latest_archived"] is None and chain["latest_archived_time"] is None
    # a far end position names only the first missing segment (no list of millions of names)
    chain = walchain.check_chain(listing, path_of(1), "0/2000000", end_lsn="FFFF/0")
    assert chain["missing"] == [name(1, 2)] and chain["end_reached"] is False
    chain = walchain.check_chain(listing, path_of(1), "0/2000000", end_time=at(0))
    assert chain["missing"] == [name(1, 2)] and chain["end_reached"] is False


def test_chain_end_time_picks_the_first_segment_archived_at_or_after_it():
    listing = listing_of(*[name(1, n) for n in range(2, 9)])  # segment n archived at minute n
    path = path_of(1)
    chain = walchain.check_chain(listing, path, "0/2000000", end_time=at(4) + datetime.timedelta(seconds=30))
    assert chain["last"] == name(1, 5) and chain["end_reached"] is True and chain["missing"] == []
    chain = walchain.check_chain(listing, path, "0/2000000", end_time=at(4))
    assert chain["last"] == name(1, 4)
    # ISO text, naive (UTC) and aware datetimes are all accepted
    chain = walchain.check_chain(listing, path, "0/2000000", end_time="2026-11-27T03:06:00Z")
    assert chain["last"] == name(1, 6)
    chain = walchain.check_chain(listing, path, "0/2000000", end_time=datetime.datetime(2026, 11, 27, 3, 6, 1))
    assert chain["last"] == name(1, 7)
    # before every segment: the start segment is the end
    chain = walchain.check_chain(listing, path, "0/3000000", end_time=at(-60))
    assert chain["last"] == name(1, 3) and chain["needed"] == 1
    # after every segment: not reached, the chain goes up to the newest one
    chain = walchain.check_chain(listing, path, "0/2000000", end_time=at(60))
    assert chain["end_reached"] is False and chain["last"] == name(1, 8) and chain["missing"] == []


def test_chain_end_time_with_a_gap_before_it():
    listing = listing_of(name(1, 2), name(1, 4), name(1, 5))
    chain = walchain.check_chain(listing, path_of(1), "0/2000000", end_time=at(5))
    assert chain["missing"] == [name(1, 3)] and chain["last"] == name(1, 5)


def test_chain_latest_is_the_newest_segment_on_the_path():
    listing = listing_of(name(1, 2), name(1, 3), name(2, 4), name(2, 5), name(1, 9))
    chain = walchain.check_chain(listing, path_of(2, "1\t0/4000000\tx\n"), "0/2000000")
    assert chain["latest_archived"] == name(2, 5) and chain["last"] == name(2, 5)
    assert chain["missing"] == []
    assert chain["latest_archived_time"] == at(5)


def test_chain_start_after_everything_archived():
    listing = listing_of(name(1, 2), name(1, 3))
    chain = walchain.check_chain(listing, path_of(1), "0/5000000")
    assert chain["needed"] == 0 and chain["missing"] == [] and chain["end_reached"] is True


# --------------------------------------------------------------------------
# list_archive / read_history against S3 (moto)
# --------------------------------------------------------------------------


def put(s3, bucket_name, object_key, body=b"w"):
    s3.put_object(Bucket=bucket_name, Key=object_key, Body=body)


def test_list_archive(s3_client, bucket):
    keys = [key(name(1, 2)), key(name(1, 3), ".zst"), key(name(1, 4), ".partial.zst"), key(name(2, 4), ".lz4"),
            key(name(1, 2), ".00000028.backup"), WAL + "00000002.history", WAL + "notes.txt"]
    for item in keys:
        put(s3_client, bucket, item)
    put(s3_client, bucket, PREFIX + "/catalog/20261127T031500.123Z-F.json", b"{}")
    put(s3_client, bucket, "pgbackup/other/wal/00000001/" + name(1, 9))
    listing = walchain.list_archive(read_only_s3(s3_client), bucket, PREFIX + "/")
    assert listing.bucket == bucket and listing.wal_segment_size == SEG
    assert sorted(listing.segments) == [name(1, 2), name(1, 3), name(2, 4)]
    assert listing.segments[name(1, 3)]["key"] == key(name(1, 3), ".zst")
    assert listing.segments[name(1, 3)]["size"] == 1
    assert listing.segments[name(1, 3)]["last_modified"].tzinfo is not None
    assert listing.partials == [name(1, 4) + ".partial"]
    assert listing.backup_files == [name(1, 2) + ".00000028.backup"]
    assert listing.histories == {2: WAL + "00000002.history"}
    assert listing.other == [WAL + "notes.txt"]
    assert listing.newest_segment() == name(2, 4)


def test_list_archive_paginates(s3_client, bucket):
    for segno in range(1, 1102):
        put(s3_client, bucket, key(name(1, segno)))
    listing = walchain.list_archive(s3_client, bucket, PREFIX)
    assert len(listing.segments) == 1101
    chain = walchain.check_chain(listing, path_of(1), "0/1000000")
    assert chain["missing"] == [] and chain["needed"] == 1101


def test_list_archive_missing_bucket(s3_client):
    with pytest.raises(RtxDrError) as info:
        walchain.list_archive(s3_client, "rtx-test-no-such-bucket", PREFIX)
    assert "listing the WAL archive s3://rtx-test-no-such-bucket/%s" % WAL in info.value.msg
    assert info.value.details["error_code"] == "NoSuchBucket"


def test_read_history(s3_client, bucket):
    put(s3_client, bucket, WAL + "00000003.history", HISTORY_3.encode())
    listing = walchain.list_archive(s3_client, bucket, PREFIX)
    assert walchain.read_history(None, listing, 1) == []  # timeline 1 has no history file: no S3 call
    entries = walchain.read_history(read_only_s3(s3_client), listing, 3)
    assert [e[:2] for e in entries] == [(1, 0x3000060), (2, 0x6000000)]


def test_read_history_missing_file_is_a_gap(s3_client, bucket):
    put(s3_client, bucket, key(name(2, 5)))
    listing = walchain.list_archive(s3_client, bucket, PREFIX)
    assert listing.latest_timeline() == 2
    with pytest.raises(WalGapError) as info:
        walchain.read_history(s3_client, listing, 2)
    assert info.value.msg == ("Timeline history file 00000002.history is not in the WAL archive s3://%s/%s: "
                              "recovery cannot follow timeline 2" % (bucket, WAL))
    assert "pg_wal/00000002.history" in info.value.hint


def test_read_history_damaged_file(s3_client, bucket):
    put(s3_client, bucket, WAL + "00000002.history", b"this is not a history file\n")
    listing = walchain.list_archive(s3_client, bucket, PREFIX)
    with pytest.raises(InvalidValueError, match="00000002.history line 1"):
        walchain.read_history(s3_client, listing, 2)


def test_read_history_deleted_after_listing(s3_client, bucket):
    put(s3_client, bucket, WAL + "00000002.history", b"1\t0/3000000\tx\n")
    listing = walchain.list_archive(s3_client, bucket, PREFIX)
    s3_client.delete_object(Bucket=bucket, Key=WAL + "00000002.history")
    with pytest.raises(RtxDrError) as info:
        walchain.read_history(s3_client, listing, 2)
    assert "reading s3://%s/%s00000002.history" % (bucket, WAL) in info.value.msg


def test_archive_after_two_promotions_end_to_end(s3_client, bucket):
    """Backup on timeline 1, promotions to 2 and 3, as PostgreSQL archives them (.partial on the old timelines)."""
    for item in ([key(name(1, n)) for n in (2, 3)] + [key(name(1, 4), ".partial.zst")]
                 + [key(name(2, n), ".zst") for n in (4, 5, 6, 7)] + [key(name(2, 8), ".partial")]
                 + [key(name(3, n), ".zst") for n in (8, 9, 10)]):
        put(s3_client, bucket, item)
    put(s3_client, bucket, WAL + "00000002.history", b"1\t0/4000100\tno recovery target specified\n")
    put(s3_client, bucket, WAL + "00000003.history",
        b"1\t0/4000100\tno recovery target specified\n2\t0/8000200\tno recovery target specified\n")
    s3 = read_only_s3(s3_client)
    listing = walchain.list_archive(s3, bucket, PREFIX)
    target = listing.latest_timeline()
    assert target == 3
    path = walchain.timeline_path(target, walchain.read_history(s3, listing, target))
    assert [p["timeline"] for p in path] == [1, 2, 3]
    chain = walchain.check_chain(listing, path, "0/2000028")
    assert chain["missing"] == [] and chain["needed"] == 9
    assert chain["last"] == name(3, 10) and chain["end_reached"] is True
    # the archive lost a segment of the middle timeline
    s3_client.delete_object(Bucket=bucket, Key=key(name(2, 6), ".zst"))
    chain = walchain.check_chain(walchain.list_archive(s3, bucket, PREFIX), path, "0/2000028")
    assert chain["missing"] == [name(2, 6)] and chain["contiguous_until"] == name(2, 5)
    # recovering to a point before the gap is still possible
    chain = walchain.check_chain(walchain.list_archive(s3, bucket, PREFIX), path, "0/2000028", end_lsn="0/5800000")
    assert chain["missing"] == [] and chain["end_reached"] is True and chain["last"] == name(2, 5)


def test_chain_end_time_in_other_spellings_and_zones():
    listing = listing_of(*[name(1, n) for n in range(2, 9)])  # segment n archived at minute n (UTC)
    path = path_of(1)
    for spelling in ("2026-11-27 03:06:00+00", "2026-11-27 08:36:00+05:30", "2026-11-26 22:06:00-05"):
        assert walchain.check_chain(listing, path, "0/2000000", end_time=spelling)["last"] == name(1, 6), spelling
    assert walchain.check_chain(listing, path, "0/2000000", end_time=None)["last"] == name(1, 8)


def test_aware_keeps_the_given_offset():
    plus_one = datetime.timezone(datetime.timedelta(hours=1))
    assert walchain._aware("2026-11-27T04:00:00+01:00").utcoffset() == datetime.timedelta(hours=1)  # pylint: disable=protected-access
    assert walchain._aware(datetime.datetime(2026, 11, 27, 3)) == T0  # pylint: disable=protected-access
    assert walchain._aware(datetime.datetime(2026, 11, 27, 4, tzinfo=plus_one)).tzinfo is plus_one  # pylint: disable=protected-access
    assert walchain._aware(None) is None  # pylint: disable=protected-access
