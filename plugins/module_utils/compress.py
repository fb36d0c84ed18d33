# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Streaming compression for backups: ``gzip``, ``lz4``, ``zstd`` and ``none``.

Every compressor has the same two methods, ``compress(data) -> bytes`` and
``flush() -> bytes`` (call once, at the end), and keeps only its own bounded
window in memory, so any amount of data can be pushed through in chunks.

- ``gzip``: :mod:`zlib` (standard library) writing the gzip container; level 0-9, default 6.
- ``lz4``: the ``lz4.frame`` module (Debian ``python3-lz4``, pip ``lz4``); level 0-16, default 0.
- ``zstd``: the ``zstandard`` module (Debian ``python3-zstandard``, pip ``zstandard``);
  level 1-22, default 3, and ``workers`` compression threads (0 = in the calling thread).
- ``none``: passes data through.

The optional libraries are imported lazily: a missing one is reported with
:class:`MissingLibraryError` naming the packages to install.

:class:`CompressorThread` runs a compressor in a background thread fed through a
bounded queue, so that reading the input and compressing it overlap (zlib,
zstandard and lz4 release the GIL while they compress a buffer), and
:func:`auto_workers` picks zstd worker threads for hosts with spare cores.
"""

from __future__ import annotations

import os
import queue
import threading
import zlib

from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError

METHODS = ("zstd", "gzip", "lz4", "none")

#: File name suffix of each method's output.
EXTENSIONS = {"gzip": ".gz", "lz4": ".lz4", "zstd": ".zst", "none": ""}

#: Default and allowed level of each method (None: the method has no level).
DEFAULT_LEVELS = {"gzip": 6, "lz4": 0, "zstd": 3, "none": None}
LEVEL_RANGES = {"gzip": (0, 9), "lz4": (0, 16), "zstd": (1, 22)}

#: zstd worker threads used when none were asked for, on a host with 2 or more usable cores.
AUTO_WORKERS = 2
#: Highest zstd level that gets :data:`AUTO_WORKERS`: every worker has its own compression context,
#: which grows with the level (one context: ~5 MB at level 3, ~16 MB at level 9, ~90 MB at level 19).
AUTO_WORKERS_MAX_LEVEL = 6
#: Input per zstd job when it runs with workers (zstd's minimum). zstd's default is 4 windows (8 MiB at
#: level 3) and each worker holds its job's input and output, plus a few jobs queued: measured at level 3
#: on 300 MB of mixed data, 2 workers took 47 MB with the default and 16 MB with 512 KiB jobs (one thread:
#: 6 MB). zstd raises it to the overlap size by itself at high levels. It changes neither the format (one
#: frame) nor, measurably, the ratio.
ZSTD_JOB_SIZE = 512 * 1024

_LIBRARIES = {
    "lz4": ("lz4.frame", "python3-lz4", "lz4"),
    "zstd": ("zstandard", "python3-zstandard", "zstandard"),
}


def _library_hint(method):
    module_name, debian, pip = _LIBRARIES[method]
    return (
        "Compression method %s needs the Python module '%s' on the target host: install it with "
        "'apt-get install %s' (Debian/Ubuntu) or 'pip install %s', or choose another compression "
        "(gzip needs no extra library)." % (method, module_name, debian, pip)
    )


def load_library(method):
    """Import and return the library module of ``method`` (None for gzip/none).

    :raises MissingLibraryError: naming the Debian and pip package to install.
    """
    if method == "lz4":
        try:
            import lz4.frame  # pylint: disable=import-outside-toplevel
        except ImportError as exc:
            raise MissingLibraryError("lz4", hint=_library_hint(method), import_error=exc) from None
        return lz4.frame
    if method == "zstd":
        try:
            import zstandard  # pylint: disable=import-outside-toplevel
        except ImportError as exc:
            raise MissingLibraryError("zstandard", hint=_library_hint(method), import_error=exc) from None
        return zstandard
    return None


def check_compression(method, level=None, workers=None):
    """Validate the options and return ``{"method", "level", "workers"}`` with defaults filled in.

    ``workers`` only applies to zstd (0 when not given); it is None for the other methods,
    as is ``level`` for ``none``.

    :raises InvalidValueError: unknown method, level out of range, negative workers.
    """
    if method not in METHODS:
        raise InvalidValueError(
            "Invalid compression %r: expected one of %s" % (method, ", ".join(METHODS)),
            hint="Set compression to zstd (default), gzip, lz4 or none.",
        )
    if method == "none":
        return {"method": "none", "level": None, "workers": None}
    if level is None:
        level = DEFAULT_LEVELS[method]
    low, high = LEVEL_RANGES[method]
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise InvalidValueError(
            "Invalid compression_level %r for compression %s: must be an integer from %d to %d"
            % (level, method, low, high),
            hint="Leave compression_level unset for the default (%d)." % DEFAULT_LEVELS[method],
        )
    if method != "zstd":
        return {"method": method, "level": level, "workers": None}
    workers = 0 if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= 256:
        raise InvalidValueError(
            "Invalid compression_workers %r: must be an integer from 0 (compress in the calling thread) to 256"
            % (workers,),
            hint="Use at most the number of CPU cores the database host can spare.",
        )
    return {"method": method, "level": level, "workers": workers}


def usable_cpus():
    """Number of CPUs this process may run on (its affinity mask when the OS tells, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_workers(method, level=None, cpus=None):
    """zstd worker threads to use when the user did not set any.

    :data:`AUTO_WORKERS` for zstd up to level :data:`AUTO_WORKERS_MAX_LEVEL` on a host with at least
    2 usable cores (``cpus``, default :func:`usable_cpus`), else 0; None for the other methods (like
    :func:`check_compression`).
    """
    if method != "zstd":
        return None
    level = DEFAULT_LEVELS["zstd"] if level is None else level
    cpus = usable_cpus() if cpus is None else cpus
    if cpus >= 2 and isinstance(level, int) and level <= AUTO_WORKERS_MAX_LEVEL:
        return AUTO_WORKERS
    return 0


def describe(settings):
    """``"zstd:3"``, ``"gzip:6"``, ``"none"``: the method and level as one string."""
    if settings.get("method") in (None, "none"):
        return "none"
    return "%s:%s" % (settings["method"], settings["level"])


class _Identity:
    def compress(self, data):  # pylint: disable=no-self-use
        return bytes(data)

    def flush(self):  # pylint: disable=no-self-use
        return b""


class _Gzip:
    def __init__(self, level):
        # wbits 16 + 15: the gzip container (header and CRC32 trailer), like gzip(1).
        self._obj = zlib.compressobj(level, zlib.DEFLATED, 31)

    def compress(self, data):
        return self._obj.compress(data)

    def flush(self):
        return self._obj.flush(zlib.Z_FINISH)


class _Lz4:
    def __init__(self, frame, level):
        self._obj = frame.LZ4FrameCompressor(compression_level=level)
        self._header = self._obj.begin()

    def compress(self, data):
        out = self._obj.compress(data)
        if self._header:
            out = self._header + out
            self._header = b""
        return out

    def flush(self):
        out = self._header + self._obj.flush()
        self._header = b""
        return out


class _Zstd:
    def __init__(self, zstandard, level, workers):
        if workers:
            # Same frame format as one thread (one frame, any zstd decoder reads it); bounded job buffers.
            params = zstandard.ZstdCompressionParameters.from_level(level, threads=workers, job_size=ZSTD_JOB_SIZE)
            self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
        else:
            self._obj = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, data):
        return self._obj.compress(data)

    def flush(self):
        return self._obj.flush()


def new_compressor(method, level=None, workers=None):
    """A streaming compressor object with ``compress(data)`` and ``flush()``.

    :raises InvalidValueError: bad options (see :func:`check_compression`).
    :raises MissingLibraryError: lz4/zstandard not installed.
    """
    settings = check_compression(method, level, workers)
    library = load_library(method)
    if method == "gzip":
        return _Gzip(settings["level"])
    if method == "lz4":
        return _Lz4(library, settings["level"])
    if method == "zstd":
        return _Zstd(library, settings["level"], settings["workers"])
    return _Identity()


#: Chunks (of the reader's size, 1 MiB in backups) the queue of a :class:`CompressorThread` holds at most.
QUEUE_CHUNKS = 4

_END = object()


class CompressorThread:
    """Compress in a background thread and hand the output to ``sink`` (e.g. ``StreamUploader.write``).

    The reading thread calls :meth:`put` with each chunk, in order, then :meth:`finish` (flush, wait,
    raise the thread's error) once the input ended, and :meth:`close` in a ``finally`` (stop without
    flushing, wait; a no-op after :meth:`finish`). One compressor thread takes the chunks from a FIFO
    queue, so the output is the same stream a single-threaded loop would write: ordering holds and the
    codec's format is unchanged.

    Memory: the queue holds at most ``max_chunks`` chunks; :meth:`put` blocks while it is full. With the
    chunk the reader is holding and the one being compressed, at most ``max_chunks + 2`` input chunks
    exist at any time, plus the compressor's own state and one output piece on its way to ``sink``.

    Errors: any exception raised in the thread by the compressor or by ``sink`` is kept and re-raised
    (the same object) in the reading thread by the next :meth:`put` or :meth:`finish`, or by
    :meth:`check`. The thread then stops writing to ``sink`` and discards queued chunks, so a reader
    blocked in :meth:`put` wakes up. Once :meth:`close` or :meth:`finish` returned (or raised), the thread
    has ended and never touches ``sink`` again, so the caller may abort or close it.
    """

    def __init__(self, compressor, sink, max_chunks=QUEUE_CHUNKS, name="rtx-dr-compress"):
        if max_chunks < 1:
            raise ValueError("max_chunks must be at least 1")
        self.compressor = compressor
        self.sink = sink
        self.max_chunks = max_chunks
        self.error = None
        self._queue = queue.Queue(maxsize=max_chunks)
        self._stop = False
        self._ended = False  # the end marker was queued
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the compressor thread ---------------------------------------------------
    def _run(self):
        ended = False
        try:
            while True:
                chunk = self._queue.get()
                if chunk is _END:
                    ended = True
                    break
                if self._stop:
                    continue
                out = self.compressor.compress(chunk)
                chunk = None  # not kept while the sink blocks (a part upload)
                if out and not self._stop:
                    self.sink(out)
            if not self._stop:
                out = self.compressor.flush()
                if out:
                    self.sink(out)
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            self.error = exc
            self._stop = True
            # Keep taking chunks until the end marker, so that put() never blocks for ever.
            if not ended:
                while self._queue.get() is not _END:
                    pass

    # -- the reading thread ----------------------------------------------------------
    def check(self):
        """Raise the compressor thread's error, if it had one."""
        if self.error is not None:
            raise self.error

    def put(self, chunk):
        """Queue ``chunk``, blocking while :attr:`max_chunks` are queued; raise the thread's error."""
        self.check()
        if self._ended:
            raise ValueError("put() after finish() or close()")
        if chunk:
            self._queue.put(chunk)
        self.check()

    def _join(self):
        # Wait for the thread even if a signal handler raises meanwhile (SIGTERM during a backup): the
        # caller must not abort the sink while the thread may still write to it. The first such
        # exception is raised once the thread has ended.
        pending = None
        while self._thread.is_alive():
            try:
                if not self._ended:
                    # Never blocks for long: the thread takes chunks until it gets this marker.
                    self._queue.put(_END)
                    self._ended = True
                self._thread.join()
            except BaseException as exc:  # pylint: disable=broad-exception-caught
                self._stop = True
                if pending is None:
                    pending = exc
        self._ended = True
        if pending is not None:
            raise pending

    def finish(self):
        """Flush the compressor into ``sink`` after every queued chunk, wait for the thread, raise its error."""
        self._join()
        self.check()

    def close(self):
        """Stop (queued chunks are dropped, nothing is flushed) and wait for the thread; keeps its error."""
        self._stop = True
        self._join()


class _Decompressor:
    def __init__(self, method):
        self.method = method
        library = load_library(method)
        if method == "gzip":
            self._obj = zlib.decompressobj(31)
        elif method == "lz4":
            self._obj = library.LZ4FrameDecompressor()
        elif method == "zstd":
            self._obj = library.ZstdDecompressor().decompressobj()
        else:
            self._obj = None

    def decompress(self, data):
        if self._obj is None:
            return bytes(data)
        return self._obj.decompress(data)

    def flush(self):
        if self.method == "gzip":
            return self._obj.flush()
        return b""


def new_decompressor(method):
    """A streaming decompressor with ``decompress(data)`` and ``flush()`` (for restores and tests)."""
    if method not in METHODS:
        raise InvalidValueError("Invalid compression %r: expected one of %s" % (method, ", ".join(METHODS)))
    return _Decompressor(method)


def decompress_bytes(method, data):
    """Decompress a whole ``bytes`` object (small data, tests)."""
    obj = new_decompressor(method)
    return obj.decompress(data) + obj.flush()
