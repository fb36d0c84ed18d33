# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The archived WAL as PostgreSQL's recovery sees it: timelines, history files, gaps.

Plain Python shared by ``rtx.dr.wal_archive_status`` and ``rtx.dr.backup_restore``.

Recovery reads segment number ``n`` from the newest timeline of its path whose
start segment is at or before ``n`` (PostgreSQL's ``XLogFileReadAnyTLI`` with the
target timeline's history): the segment holding a switch point is read from the new
timeline, the old timeline's copy of it is only archived as ``.partial``. So the WAL
needed from a base backup (timeline ``T``, stop LSN ``S``) to an end position is, for
every segment number from ``S``'s segment to the end, the segment of the timeline
that is current at that number on the path to the target timeline.
"""

from __future__ import annotations

from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.aws import list_objects
from ansible_collections.rtx.dr.plugins.module_utils.catalog import parse_time
from ansible_collections.rtx.dr.plugins.module_utils.catalog import wal_prefix
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name

#: Compression suffixes an archived segment may carry (see walarchive.EXTENSIONS).
_SUFFIXES = ("", ".zst", ".lz4", ".gz")
#: A chain longer than this is refused (a typo in a position would otherwise list millions of names).
MAX_CHAIN_SEGMENTS = 10 ** 6


class WalGapError(RtxDrError):
    """Segments needed for a recovery are missing from the archive."""


def segment_name(timeline, segno, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    per_id = 0x100000000 // wal_segment_size
    return "%08X%08X%08X" % (timeline, segno // per_id, segno % per_id)


def segno_of(lsn, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    return parse_lsn(lsn) // wal_segment_size


# --------------------------------------------------------------------------
# Timeline history
# --------------------------------------------------------------------------


def parse_history(text, timeline=None):
    """Entries of a timeline history file: ``[(parent_timeline, switch_lsn_int, reason), ...]``.

    Each line is ``<parent tli>\\t<switch point>\\t<reason>``; comments and blank lines are skipped
    (PostgreSQL's ``readTimeLineHistory``). Parents must increase and be below ``timeline``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    entries = []
    what = "%08X.history" % timeline if timeline else "timeline history file"
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(None, 2)
        try:
            parent = int(fields[0])
            switch = parse_lsn(fields[1])
        except (IndexError, ValueError, RtxDrError):
            raise InvalidValueError("%s line %d is not '<timeline> <switch LSN> <reason>': %r"
                                    % (what, number, line)) from None
        if parent < 1:
            raise InvalidValueError("%s line %d: timeline %d does not exist (timelines start at 1)"
                                    % (what, number, parent))
        if entries and parent <= entries[-1][0]:
            raise InvalidValueError("%s line %d: timeline %d does not follow timeline %d"
                                    % (what, number, parent, entries[-1][0]))
        if timeline and parent >= timeline:
            raise InvalidValueError("%s line %d: parent timeline %d is not below %d" % (what, number, parent, timeline))
        entries.append((parent, switch, fields[2] if len(fields) > 2 else ""))
    return entries


def timeline_path(target_timeline, history_entries):
    """The path to ``target_timeline``: ``[{'timeline', 'begin_lsn', 'end_lsn'}]`` oldest first (ints, end None = open).

    ``history_entries`` are :func:`parse_history` of the target timeline's history file (empty for timeline 1).
    """
    path = []
    begin = 0
    for parent, switch, _reason in history_entries:
        path.append({"timeline": parent, "begin_lsn": begin, "end_lsn": switch})
        begin = switch
    path.append({"timeline": target_timeline, "begin_lsn": begin, "end_lsn": None})
    return path


def timeline_at(path, lsn):
    """Timeline of ``path`` that holds position ``lsn`` (the last one beginning at or before it)."""
    lsn = parse_lsn(lsn)
    current = path[0]["timeline"]
    for piece in path:
        if piece["begin_lsn"] <= lsn:
            current = piece["timeline"]
    return current


def timeline_for_segno(path, segno, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Timeline recovery reads segment ``segno`` from: the newest of ``path`` whose first segment is <= segno."""
    current = path[0]["timeline"]
    for piece in path:
        if piece["begin_lsn"] // wal_segment_size <= segno:
            current = piece["timeline"]
    return current


def required_segments(path, start_segno, end_segno, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Names of the segments ``start_segno``..``end_segno`` (inclusive) along ``path``."""
    if end_segno < start_segno:
        return []
    if end_segno - start_segno >= MAX_CHAIN_SEGMENTS:
        raise InvalidValueError("WAL range of %d segments is too long to check (more than %d)"
                                % (end_segno - start_segno + 1, MAX_CHAIN_SEGMENTS))
    return [segment_name(timeline_for_segno(path, n, wal_segment_size), n, wal_segment_size)
            for n in range(start_segno, end_segno + 1)]


# --------------------------------------------------------------------------
# The archive listing
# --------------------------------------------------------------------------


class ArchiveListing:
    """What the WAL archive holds: segments and history files, from one S3 listing.

    ``segments[name] = {'key', 'size', 'last_modified'}`` (aware datetimes, the time the segment
    was archived), ``histories[timeline] = key``, ``partials`` = names of ``.partial`` files.
    """

    def __init__(self, bucket, prefix, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
        self.bucket = bucket
        self.prefix = prefix
        self.wal_segment_size = wal_segment_size
        self.segments = {}
        self.histories = {}
        self.partials = []
        self.backup_files = []
        self.other = []

    def add(self, key, size, last_modified):
        name = key.rsplit("/", 1)[-1]
        for suffix in _SUFFIXES:
            if suffix and not name.endswith(suffix):
                continue
            base = name[:len(name) - len(suffix)] if suffix else name
            if len(base) == 24:
                try:
                    parse_wal_segment_name(base, self.wal_segment_size)
                except RtxDrError:
                    continue
                known = self.segments.get(base)
                # Several copies (another compression): keep the first archived; a time beats none.
                if known is None or (last_modified is not None and (
                        known["last_modified"] is None or last_modified < known["last_modified"])):
                    self.segments[base] = {"key": key, "size": size, "last_modified": last_modified}
                return
            if base.endswith(".partial") and len(base) == 32:
                self.partials.append(base)
                return
        if name.endswith(".history") and len(name) == 16:
            try:
                self.histories[int(name[:8], 16)] = key
                return
            except ValueError:
                pass
        if name.endswith(".backup"):
            self.backup_files.append(name)
            return
        self.other.append(key)

    def timelines(self):
        return sorted(set(int(n[:8], 16) for n in self.segments) | set(self.histories))

    def latest_timeline(self):
        found = self.timelines()
        return found[-1] if found else None

    def newest_segment(self):
        """Name of the archived segment with the highest (segment number, timeline), or None."""
        if not self.segments:
            return None
        return max(self.segments, key=lambda n: (parse_wal_segment_name(n, self.wal_segment_size).segno, n[:8]))


def list_archive(s3, bucket, prefix, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """:class:`ArchiveListing` of ``<prefix>/wal/`` (one paginated listing)."""
    listing = ArchiveListing(bucket, prefix, wal_segment_size)
    start = wal_prefix(prefix)
    for item in list_objects(s3, bucket, start, "listing the WAL archive"):
        listing.add(item["Key"], item.get("Size"), item.get("LastModified"))
    return listing


def read_history(s3, listing, timeline):
    """Parsed history of ``timeline`` from the archive; ``[]`` for timeline 1.

    :raises WalGapError: the history file of a timeline above 1 is not archived (recovery cannot follow it).
    """
    if timeline == 1:
        return []
    key = listing.histories.get(timeline)
    if key is None:
        raise WalGapError(
            "Timeline history file %08X.history is not in the WAL archive s3://%s/%s: recovery cannot follow "
            "timeline %d" % (timeline, listing.bucket, wal_prefix(listing.prefix), timeline),
            hint="Archive it from the server that created the timeline (pg_wal/%08X.history) with the WAL agent's "
                 "push command, or restore to an earlier timeline." % timeline)
    try:
        body = s3.get_object(Bucket=listing.bucket, Key=key)["Body"].read()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "reading s3://%s/%s" % (listing.bucket, key)) from None
    return parse_history(body, timeline)


# --------------------------------------------------------------------------
# Chains and gaps
# --------------------------------------------------------------------------


def _aware(when):
    """An aware datetime (naive: UTC; the given offset kept) from a datetime or ISO text; None for None."""
    return parse_time(when, keep_offset=True)


def check_chain(listing, path, start_lsn, end_lsn=None, end_time=None):
    """Walk the archive along ``path`` from the segment of ``start_lsn``.

    End: the segment of ``end_lsn`` (an end position, inclusive) when given; else the first segment
    archived at or after ``end_time`` when given; else the newest archived segment on the path.

    Returns ``{'first', 'last', 'needed', 'present', 'missing' (names, in order), 'first_missing',
    'contiguous_until' (last segment before the first gap), 'contiguous_until_time', 'end_reached'
    (False when the end is past what is archived), 'latest_archived', 'latest_archived_time'}``.
    """
    size = listing.wal_segment_size
    start_segno = segno_of(start_lsn, size)
    on_path = {}
    for name, info in listing.segments.items():
        seg = parse_wal_segment_name(name, size)
        if seg.segno >= start_segno and timeline_for_segno(path, seg.segno, size) == seg.timeline:
            on_path[seg.segno] = (name, info)
    newest = max(on_path) if on_path else None
    end_time = _aware(end_time)
    end_reached = True
    if end_lsn is not None:
        position = parse_lsn(end_lsn)
        end_segno = (position - 1) // size if position > 0 and position % size == 0 else position // size
        end_segno = max(end_segno, start_segno)
        if newest is None or newest < end_segno:
            end_reached = False
    elif end_time is not None:
        after = [n for n, (_name, info) in on_path.items()
                 if info["last_modified"] is not None and _aware(info["last_modified"]) >= end_time]
        if after:
            end_segno = min(after)
        else:
            end_segno = newest if newest is not None else start_segno
            end_reached = False
    else:
        end_segno = newest if newest is not None else start_segno - 1
    # Do not list millions of names past the archive: stop at what exists (+1 to name the first missing one;
    # with nothing archived on the path that is the start segment itself).
    walk_to = min(end_segno, (start_segno - 1 if newest is None else newest) + 1)
    needed = required_segments(path, start_segno, walk_to, size)
    missing = []
    contiguous_until = None
    contiguous_time = None
    for name in needed:
        seg = parse_wal_segment_name(name, size)
        if seg.segno in on_path and on_path[seg.segno][0] == name:
            if not missing:
                contiguous_until = name
                contiguous_time = _aware(on_path[seg.segno][1]["last_modified"])
        else:
            missing.append(name)
    latest = on_path[newest] if newest is not None else None
    return {
        "first": needed[0] if needed else None,
        "last": needed[-1] if needed else None,
        "needed": len(needed),
        "present": len(needed) - len(missing),
        "missing": missing,
        "first_missing": missing[0] if missing else None,
        "contiguous_until": contiguous_until,
        "contiguous_until_time": contiguous_time,
        "end_reached": end_reached and (newest is None or end_segno <= newest),
        "latest_archived": latest[0] if latest else None,
        "latest_archived_time": _aware(latest[1]["last_modified"]) if latest else None,
    }


def describe_gap(chain, listing, limit=5):
    """One sentence naming the missing segments of a :func:`check_chain` result."""
    missing = chain["missing"]
    names = ", ".join(missing[:limit]) + (" and %d more" % (len(missing) - limit) if len(missing) > limit else "")
    where = "s3://%s/%s" % (listing.bucket, wal_prefix(listing.prefix))
    after = (" (contiguous up to %s, archived %s)" % (chain["contiguous_until"], chain["contiguous_until_time"])
             if chain["contiguous_until"] else "")
    return "%d WAL segment(s) missing from the archive %s: %s%s" % (len(missing), where, names, after)


def lsn_text(value):
    return None if value is None else format_lsn(value)
