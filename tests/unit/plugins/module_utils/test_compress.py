# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import builtins
import gzip
import os

import pytest

from ansible_collections.rtx.dr.plugins.module_utils import compress
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError

DATA = (b"pgbench row %d with some text\n" * 1000) * 3 + os.urandom(300000) + b"\0" * 2000000


def _available(method):
    try:
        compress.load_library(method)
    except MissingLibraryError:
        return False
    return True


def _roundtrip(method, data, chunk, **kwargs):
    comp = compress.new_compressor(method, **kwargs)
    out = bytearray()
    for pos in range(0, len(data), chunk):
        out += comp.compress(data[pos:pos + chunk])
    out += comp.flush()
    dec = compress.new_decompressor(method)
    back = bytearray()
    for pos in range(0, len(out), 7777):
        back += dec.decompress(bytes(out[pos:pos + 7777]))
    back += dec.flush()
    return bytes(out), bytes(back)


@pytest.mark.parametrize("method", compress.METHODS)
@pytest.mark.parametrize("chunk", [1000, 65536, 1 << 20])
def test_roundtrip(method, chunk):
    if not _available(method):
        pytest.skip("%s library not installed" % method)
    out, back = _roundtrip(method, DATA, chunk)
    assert back == DATA
    if method != "none":
        assert len(out) < len(DATA)


def test_gzip_output_is_a_gzip_file():
    out, _back = _roundtrip("gzip", DATA, 4096, level=1)
    assert gzip.decompress(out) == DATA


def test_zstd_with_workers_and_level():
    if not _available("zstd"):
        pytest.skip("zstandard not installed")
    out, back = _roundtrip("zstd", DATA, 1 << 20, level=9, workers=2)
    assert back == DATA
    import zstandard  # pylint: disable=import-outside-toplevel

    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == DATA


def test_lz4_output_is_an_lz4_frame():
    if not _available("lz4"):
        pytest.skip("lz4 not installed")
    import lz4.frame  # pylint: disable=import-outside-toplevel

    out, _back = _roundtrip("lz4", DATA, 100000)
    assert lz4.frame.decompress(out) == DATA


def test_empty_input():
    for method in compress.METHODS:
        if _available(method):
            out, back = _roundtrip(method, b"", 10)
            assert back == b""
            assert compress.decompress_bytes(method, out) == b""


def test_check_compression_defaults_and_errors():
    assert compress.check_compression("zstd") == {"method": "zstd", "level": 3, "workers": 0}
    assert compress.check_compression("gzip") == {"method": "gzip", "level": 6, "workers": None}
    assert compress.check_compression("lz4", 4) == {"method": "lz4", "level": 4, "workers": None}
    assert compress.check_compression("none", 5) == {"method": "none", "level": None, "workers": None}
    for bad in (("brotli",), ("gzip", 10), ("zstd", 0), ("zstd", 3, -1), ("gzip", True)):
        with pytest.raises(InvalidValueError):
            compress.check_compression(*bad)
    assert compress.describe({"method": "zstd", "level": 3}) == "zstd:3"
    assert compress.describe({"method": "none", "level": None}) == "none"
    assert compress.EXTENSIONS == {"gzip": ".gz", "lz4": ".lz4", "zstd": ".zst", "none": ""}


@pytest.mark.parametrize("method,module,debian,pip", [
    ("zstd", "zstandard", "python3-zstandard", "zstandard"),
    ("lz4", "lz4", "python3-lz4", "lz4"),
])
def test_missing_library_names_packages(monkeypatch, method, module, debian, pip):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == module:
            raise ImportError("No module named %r" % module)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingLibraryError) as info:
        compress.new_compressor(method)
    text = str(info.value)
    assert debian in text and ("pip install %s" % pip) in text
    # gzip and none need nothing extra
    compress.new_compressor("gzip")
    compress.new_compressor("none")
