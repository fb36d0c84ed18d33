# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Incremental observer of a tar stream (ustar, pax and GNU headers).

:class:`TarObserver` is fed the bytes of a tar archive in chunks of any size
(``feed(data)``), as they flow from ``pg_basebackup -D - -Ft`` to the
compressor, and never buffers file contents: only the current 512-byte header,
pax / GNU long-name records and the content of the few members asked for in
``capture`` (``backup_manifest`` and ``backup_label`` by default, which are
small) are kept. It records each member's name, type and size, validates
header checksums, and knows when the end-of-archive marker has been seen.
"""

from __future__ import annotations

BLOCK = 512

DEFAULT_CAPTURE = ("backup_manifest", "backup_label")

#: Upper bound for a captured member, a pax header or a GNU long name.
DEFAULT_MAX_CAPTURE_BYTES = 256 * 1024 * 1024
_MAX_META_BYTES = 16 * 1024 * 1024

_TYPES = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "chardev",
    b"4": "blockdev",
    b"5": "directory",
    b"6": "fifo",
}


class TarStreamError(ValueError):
    """The stream is not a well-formed tar archive."""


def _nts(field):
    """NUL-terminated bytes field to str."""
    end = field.find(b"\0")
    if end != -1:
        field = field[:end]
    return field.decode("utf-8", "surrogateescape")


def _number(field):
    """Octal (possibly space/NUL padded) or GNU base-256 number field."""
    if field and field[0] & 0x80:
        # GNU base-256: big-endian two's complement with the top bit as a marker.
        value = field[0] & 0x7F
        negative = bool(field[0] & 0x40)
        for byte in field[1:]:
            value = (value << 8) | byte
        if negative:
            value -= 1 << (len(field) * 8 - 1)
        return value
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarStreamError("invalid number field %r in tar header" % (field,)) from None


def _checksum_ok(header):
    stored = _number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored == unsigned:
        return True
    # Some old tars used signed chars.
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 32
    return stored == signed


def _parse_pax(data):
    """Parse pax extended header records ``"%d %s=%s\\n"`` into a dict of str."""
    records = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] == b"\0":
            break
        space = data.find(b" ", pos)
        if space == -1:
            raise TarStreamError("malformed pax header record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarStreamError("malformed pax header record length") from None
        if length <= 0:
            raise TarStreamError("malformed pax header record length")
        record = data[space + 1:pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise TarStreamError("malformed pax header record")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarObserver:
    """Watch a tar stream go by.

    :param capture: member names (exact, after stripping a leading ``./``) whose content to keep.
    :param max_capture_bytes: fail with :class:`TarStreamError` if a captured member is larger.
    :param keep_members: keep ``members`` (list of dicts ``{name, type, size}``); when False only
        the counters are kept.

    After the stream ends, ``finished`` is True when the end-of-archive marker
    was seen, ``captured`` maps the captured names to their bytes,
    ``file_count``/``file_bytes`` count regular files and their content bytes,
    ``bytes_seen`` all bytes fed.
    """

    def __init__(self, capture=DEFAULT_CAPTURE, max_capture_bytes=DEFAULT_MAX_CAPTURE_BYTES, keep_members=True):
        self.capture = frozenset(capture or ())
        self.max_capture_bytes = max_capture_bytes
        self.keep_members = keep_members
        self.members = []
        self.captured = {}
        self.member_count = 0
        self.file_count = 0
        self.file_bytes = 0
        self.bytes_seen = 0
        self.finished = False
        self._header = bytearray()
        self._zero_blocks = 0
        # Content of the current member: bytes still to come and padding after it.
        self._remaining = 0
        self._padding = 0
        self._sink = None  # bytearray collecting content (captured member, pax, GNU long name)
        self._sink_kind = None  # ("capture", name) | ("pax",) | ("global",) | ("longname",) | ("longlink",)
        self._pending_pax = {}
        self._pending_name = None

    # ------------------------------------------------------------------
    def feed(self, data):
        """Observe the next chunk of the stream (``bytes``/``bytearray``/``memoryview``)."""
        view = memoryview(data)
        self.bytes_seen += len(view)
        pos = 0
        end = len(view)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                if self._sink is not None:
                    self._sink += view[pos:pos + take]
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._member_content_done()
                continue
            if self._padding:
                take = min(self._padding, end - pos)
                self._padding -= take
                pos += take
                continue
            if self.finished:
                # Anything after the end-of-archive marker (more zero blocks) is ignored.
                return
            take = min(BLOCK - len(self._header), end - pos)
            self._header += view[pos:pos + take]
            pos += take
            if len(self._header) == BLOCK:
                header = bytes(self._header)
                self._header = bytearray()
                self._handle_header(header)

    def close(self):
        """Check that the stream ended cleanly; raise :class:`TarStreamError` otherwise."""
        if self._remaining or self._header or self._sink is not None:
            raise TarStreamError(
                "tar stream truncated: ended inside a member (%d bytes of content missing)" % self._remaining
            )
        if not self.finished:
            raise TarStreamError("tar stream ended without the end-of-archive marker")

    # ------------------------------------------------------------------
    def _handle_header(self, header):
        if header == b"\0" * BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self.finished = True
            return
        if self._zero_blocks:
            raise TarStreamError("single zero block inside the tar stream")
        if not _checksum_ok(header):
            raise TarStreamError("bad tar header checksum after %d members: not a tar stream, or corrupt" % self.member_count)
        typeflag = header[156:157]
        size = _number(header[124:136])
        if size < 0:
            raise TarStreamError("negative member size in tar header")
        if typeflag in (b"x", b"g"):
            self._start_meta(("pax",) if typeflag == b"x" else ("global",), size)
            return
        if typeflag in (b"L", b"K"):
            self._start_meta(("longname",) if typeflag == b"L" else ("longlink",), size)
            return
        name = _nts(header[0:100])
        if header[257:262] == b"ustar":
            prefix = _nts(header[345:500]) if header[257:263] == b"ustar\0" else ""
            if prefix:
                name = prefix + "/" + name
        if self._pending_name is not None:
            name = self._pending_name
        if "path" in self._pending_pax:
            name = self._pending_pax["path"]
        if "size" in self._pending_pax:
            try:
                size = int(self._pending_pax["size"])
            except ValueError:
                raise TarStreamError("invalid pax size %r" % self._pending_pax["size"]) from None
        self._pending_name = None
        self._pending_pax = {}
        kind = _TYPES.get(typeflag, "other")
        if kind == "directory" and len(name) > 1:
            name = name.rstrip("/")
        if kind in ("hardlink", "symlink", "chardev", "blockdev", "directory", "fifo"):
            content = 0
        else:
            content = size
        self.member_count += 1
        if kind == "file":
            self.file_count += 1
            self.file_bytes += content
        if self.keep_members:
            self.members.append({"name": name, "type": kind, "size": content})
        short = name[2:] if name.startswith("./") else name
        self._remaining = content
        self._padding = (-content) % BLOCK
        if short in self.capture and kind == "file":
            if content > self.max_capture_bytes:
                raise TarStreamError(
                    "member %s is %d bytes, more than the %d bytes this observer may keep"
                    % (name, content, self.max_capture_bytes)
                )
            self._sink = bytearray()
            self._sink_kind = ("capture", short)
        if not content:
            self._member_content_done()

    def _start_meta(self, kind, size):
        if size > _MAX_META_BYTES:
            raise TarStreamError("tar extended header of %d bytes is implausibly large" % size)
        self._sink = bytearray()
        self._sink_kind = kind
        self._remaining = size
        self._padding = (-size) % BLOCK
        if not size:
            self._member_content_done()

    def _member_content_done(self):
        sink, kind = self._sink, self._sink_kind
        self._sink = None
        self._sink_kind = None
        if sink is None:
            return
        if kind[0] == "capture":
            self.captured[kind[1]] = bytes(sink)
        elif kind[0] == "pax":
            self._pending_pax.update(_parse_pax(bytes(sink)))
        elif kind[0] == "longname":
            self._pending_name = _nts(bytes(sink))
        # Global pax headers and GNU long link names do not change member names.

    def summary(self):
        """Counters as a dict (JSON-serialisable)."""
        return {
            "members": self.member_count,
            "files": self.file_count,
            "file_bytes": self.file_bytes,
            "bytes": self.bytes_seen,
            "finished": self.finished,
        }
