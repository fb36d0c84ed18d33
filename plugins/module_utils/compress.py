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
"""

from __future__ import annotations

import zlib

from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError

METHODS = ("zstd", "gzip", "lz4", "none")

#: File name suffix of each method's output.
EXTENSIONS = {"gzip": ".gz", "lz4": ".lz4", "zstd": ".zst", "none": ""}

#: Default and allowed level of each method (None: the method has no level).
DEFAULT_LEVELS = {"gzip": 6, "lz4": 0, "zstd": 3, "none": None}
LEVEL_RANGES = {"gzip": (0, 9), "lz4": (0, 16), "zstd": (1, 22)}

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
        self._obj = zstandard.ZstdCompressor(level=level, threads=workers or 0).compressobj()

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
