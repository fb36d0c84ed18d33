# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Batched WAL archiving: one ``archive_command`` call pushes the file asked for and the next ready ones.

PostgreSQL calls ``archive_command`` once per WAL file and waits for it. Each call of
``wal_agent.py push`` costs a Python start, the botocore imports and a client before any
byte moves (about 0.6 s of a 0.4-1.0 s push measured on the lab), so under sustained
writes the archiver falls behind (``bench/wal``). The same answer as pgBackRest's
``archive-async`` and WAL-G's upload concurrency, without a second daemon:

- a push of ``pg_wal/X`` also looks at ``pg_wal/archive_status/*.ready`` and pushes up
  to ``push_batch - 1`` further files that wait there (timeline history files first,
  then in WAL order), ``push_parallel`` at a time, with the same code
  (:func:`walarchive.push`: SSE-KMS, SHA256, never overwritten, replica copy);
- for each further file that reached the archive (and the replica in ``sync`` mode) a
  **marker** ``<spool_dir>/<name>.pushed`` records its size and SHA256 as pushed;
- when PostgreSQL then asks for that file, :meth:`Markers.consume` re-reads the local
  file and answers "archived" without any S3 request only when the size and SHA256
  are the marker's. A marker that does not match (a rebuilt server that reuses a name,
  a stale spool) is removed and the file is pushed normally: the marker can save work,
  never skip a push of different bytes.

What can go wrong stays visible: a further file that fails is logged as a warning and
gets no marker (PostgreSQL asks for it later and the normal push fails or succeeds on
its own); the file PostgreSQL asked for fails the call exactly as without batching.
Markers older than :data:`STALE_SECONDS` are removed by every batch.

Plain Python (no botocore, no ansible): the marker fast path runs before any client
is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError

#: The options of batching (wal section of the agent configuration).
SPOOL_OPTIONS = dict(
    spool_dir=dict(type="str"),
    push_batch=dict(type="int", default=1),
    push_parallel=dict(type="int", default=1),
)
MAX_BATCH = 64
MAX_PARALLEL = 16
#: Markers older than this are removed (a file PostgreSQL never asked for again).
STALE_SECONDS = 24 * 3600
SUFFIX = ".pushed"
_READY_RE = re.compile(r"^([0-9A-F]{8}\.history|[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?)\.ready$")
CHUNK = 1024 * 1024


def check_spool_options(params, where="the wal section"):
    """``(spool_dir or None, batch, parallel)`` after checking the batching options."""
    batch = 1 if params.get("push_batch") is None else params["push_batch"]
    parallel = 1 if params.get("push_parallel") is None else params["push_parallel"]
    spool_dir = params.get("spool_dir") or None
    if not 1 <= batch <= MAX_BATCH:
        raise InvalidValueError("push_batch %s in %s is out of range 1..%d" % (batch, where, MAX_BATCH),
                                hint="1 pushes only the file PostgreSQL asks for; 8 is a good start under load.")
    if not 1 <= parallel <= MAX_PARALLEL:
        raise InvalidValueError("push_parallel %s in %s is out of range 1..%d" % (parallel, where, MAX_PARALLEL),
                                hint="Uploads at a time within one batch; about the number of cores.")
    if batch > 1 and not spool_dir:
        raise InvalidValueError("push_batch %d in %s needs spool_dir (where the pushed markers are kept)" % (batch, where),
                                hint="Set spool_dir to a directory the PostgreSQL server's user owns, outside the "
                                "data directory (the rtx.dr.backup_schedule role creates /var/lib/rtx-dr/wal-spool).")
    return spool_dir, batch, parallel


def file_sha256(path):
    """``(size, sha256 hex)`` of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class Markers:
    """The ``<name>.pushed`` markers of files pushed ahead of PostgreSQL's call."""

    def __init__(self, directory):
        self.directory = directory

    def path(self, name):
        return os.path.join(self.directory, os.path.basename(name) + SUFFIX)

    def record(self, name, size, sha256, key):
        """Write the marker of ``name`` atomically (temporary file + rename)."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"name": os.path.basename(name), "bytes": size, "sha256": sha256, "key": key,
                           "pushed_at": time.time()}, handle)
            os.replace(tmp, self.path(name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def read(self, name):
        try:
            with open(self.path(name), encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def has(self, name):
        return os.path.exists(self.path(name))

    def consume(self, path):
        """The marker of the file at ``path`` when it matches the file's size and SHA256, else None.

        The marker is removed in both cases: a match is answered once (PostgreSQL marks the
        file done), a mismatch is stale and the file gets a normal push.
        """
        marker = self.read(path)
        if marker is None:
            if self.has(path):
                self._remove(path)
            return None
        self._remove(path)
        try:
            size, sha256 = file_sha256(path)
        except OSError:
            return None  # the normal push reports the unreadable file
        if size != marker.get("bytes") or sha256 != marker.get("sha256"):
            return None
        return marker

    def _remove(self, name):
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def prune(self, now=None, max_age=STALE_SECONDS):
        """Remove markers (and leftover temporary files) older than ``max_age`` seconds; their names."""
        now = time.time() if now is None else now
        removed = []
        try:
            entries = os.listdir(self.directory)
        except OSError:
            return removed
        for entry in entries:
            if not (entry.endswith(SUFFIX) or entry.startswith(".tmp-")):
                continue
            full = os.path.join(self.directory, entry)
            try:
                if now - os.stat(full).st_mtime > max_age:
                    os.unlink(full)
                    removed.append(entry)
            except OSError:
                continue
        return removed


def _order(name):
    """History files first (PostgreSQL archives them first too), then WAL order."""
    return (0 if name.endswith(".history") else 1, name)


def ready_files(wal_path, limit, markers=None):
    """Paths of up to ``limit`` files waiting in ``archive_status`` besides ``wal_path``, in archiving order.

    ``wal_path`` is PostgreSQL's ``%p`` (``pg_wal/<name>``); files that already have a
    marker, or whose WAL file is gone, are left out.
    """
    if limit <= 0:
        return []
    wal_dir = os.path.dirname(wal_path) or "."
    current = os.path.basename(wal_path)
    try:
        entries = os.listdir(os.path.join(wal_dir, "archive_status"))
    except OSError:
        return []
    names = []
    for entry in entries:
        if not _READY_RE.match(entry):
            continue
        name = entry[:-len(".ready")]
        if name == current or (markers is not None and markers.has(name)):
            continue
        if os.path.exists(os.path.join(wal_dir, name)):
            names.append(name)
    return [os.path.join(wal_dir, name) for name in sorted(names, key=_order)[:limit]]


def push_batch(push_one, wal_path, others, parallel, markers, log=None):
    """Push ``wal_path`` and ``others`` (``parallel`` at a time); the result of ``wal_path``.

    ``push_one(path)`` returns walarchive.push's result (``sha256``, ``bytes``, ``key``) or
    raises. The error of ``wal_path`` is raised after every other push has ended; each other
    file that succeeded gets a marker, each failure is a warning in ``log``.
    """
    paths = [wal_path] + list(others)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(paths)))) as pool:
        futures = [pool.submit(push_one, path) for path in paths]
        outcomes = []
        for path, future in zip(paths, futures):
            try:
                outcomes.append((path, future.result(), None))
            except Exception as exc:  # pylint: disable=broad-exception-caught
                outcomes.append((path, None, exc))
    pushed = []
    for path, result, error in outcomes[1:]:
        name = os.path.basename(path)
        if error is not None:
            if log is not None:
                log.warning("push %s ahead of PostgreSQL failed (it is pushed again when PostgreSQL asks for it): %s"
                            % (path, getattr(error, "msg", None) or error))
            continue
        markers.record(name, result["bytes"], result["sha256"], result["key"])
        pushed.append(name)
    path, result, error = outcomes[0]
    if error is not None:
        raise error
    result = dict(result)
    result["pushed_ahead"] = pushed
    return result
