# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import builtins
import gzip
import os
import threading
import time

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


# --------------------------------------------------------------------------
# zstd workers chosen automatically
# --------------------------------------------------------------------------


def test_auto_workers():
    assert compress.auto_workers("zstd", None, cpus=2) == compress.AUTO_WORKERS == 2
    assert compress.auto_workers("zstd", 3, cpus=64) == 2
    assert compress.auto_workers("zstd", compress.AUTO_WORKERS_MAX_LEVEL, cpus=2) == 2
    assert compress.auto_workers("zstd", compress.AUTO_WORKERS_MAX_LEVEL + 1, cpus=8) == 0
    assert compress.auto_workers("zstd", 3, cpus=1) == 0
    assert compress.auto_workers("gzip", 6, cpus=8) is None
    assert compress.auto_workers("none", None, cpus=8) is None
    assert compress.usable_cpus() >= 1


def test_zstd_workers_write_one_standard_frame():
    if not _available("zstd"):
        pytest.skip("zstandard not installed")
    import zstandard  # pylint: disable=import-outside-toplevel

    data = DATA * 3
    single, _back = _roundtrip("zstd", data, 1 << 20, workers=0)
    threaded, back = _roundtrip("zstd", data, 1 << 20, workers=2)
    assert back == data
    for out in (single, threaded):
        params = zstandard.get_frame_parameters(out)
        assert not params.has_checksum and params.dict_id == 0
        assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data
    # Compressed in 512 KiB jobs, the ratio stays within 2 % of one thread.
    assert len(threaded) < len(single) * 1.02


# --------------------------------------------------------------------------
# CompressorThread
# --------------------------------------------------------------------------


class Recorder:
    """A compressor that tags each chunk with its position, optionally failing or blocking."""

    def __init__(self, fail_at=None, gate=None):
        self.seen = []
        self.flushed = False
        self.fail_at = fail_at
        self.gate = gate

    def compress(self, data):
        if self.gate is not None:
            self.gate.wait()
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise ValueError("codec broke at chunk %d" % self.fail_at)
        self.seen.append(bytes(data))
        return b"<%d:%s>" % (len(self.seen), bytes(data))

    def flush(self):
        self.flushed = True
        return b"<end>"


def _chunks(count=200):
    return [b"chunk-%04d|" % n + os.urandom(n % 50) for n in range(count)]


def test_compressor_thread_keeps_the_order():
    chunks = _chunks()
    out = []
    rec = Recorder()
    stage = compress.CompressorThread(rec, out.append, max_chunks=2)
    try:
        for chunk in chunks:
            stage.put(chunk)
        stage.put(b"")  # empty chunks are skipped
        stage.finish()
    finally:
        stage.close()
    assert rec.seen == chunks and rec.flushed
    expected = [b"<%d:%s>" % (n + 1, c) for n, c in enumerate(chunks)] + [b"<end>"]
    assert out == expected
    stage.close()  # again: a no-op
    with pytest.raises(ValueError):
        stage.put(b"late")


@pytest.mark.parametrize("method", compress.METHODS)
def test_compressor_thread_output_equals_the_serial_loop(method):
    if not _available(method):
        pytest.skip("%s library not installed" % method)
    data = DATA * 4
    serial, _back = _roundtrip(method, data, 65536)
    out = bytearray()
    stage = compress.CompressorThread(compress.new_compressor(method), out.extend)
    try:
        for pos in range(0, len(data), 65536):
            stage.put(data[pos:pos + 65536])
        stage.finish()
    finally:
        stage.close()
    # Byte for byte the stream a single-threaded loop writes: restore and verify read it unchanged.
    assert bytes(out) == serial
    assert compress.decompress_bytes(method, bytes(out)) == data


def test_compressor_error_is_raised_in_the_reading_thread_and_stops_the_stage():
    out = []
    rec = Recorder(fail_at=5)
    stage = compress.CompressorThread(rec, out.append, max_chunks=2)
    with pytest.raises(ValueError, match="codec broke at chunk 5"):
        try:
            for chunk in _chunks(1000):
                stage.put(chunk)
            stage.finish()
        finally:
            stage.close()
    assert isinstance(stage.error, ValueError)
    assert not stage._thread.is_alive()  # pylint: disable=protected-access
    # Nothing after the failing chunk reached the sink, and nothing was flushed.
    assert len(out) == 5 and not rec.flushed
    with pytest.raises(ValueError, match="codec broke"):
        stage.finish()


def test_sink_error_is_raised_as_is_and_the_reader_never_blocks():
    failure = ConnectionResetError("network cut at part 3")
    written = []

    def sink(data):
        if len(written) == 3:
            raise failure
        written.append(data)

    stage = compress.CompressorThread(Recorder(), sink, max_chunks=1)
    with pytest.raises(ConnectionResetError) as info:
        try:
            for chunk in _chunks(10000):
                stage.put(chunk)
            stage.finish()
        finally:
            stage.close()
    assert info.value is failure
    assert len(written) == 3 and not stage._thread.is_alive()  # pylint: disable=protected-access


def test_error_at_flush_is_raised_by_finish():
    class FailingFlush(Recorder):
        def flush(self):
            raise OSError("flush failed")

    out = []
    stage = compress.CompressorThread(FailingFlush(), out.append)
    for chunk in _chunks(10):
        stage.put(chunk)
    with pytest.raises(OSError, match="flush failed"):
        stage.finish()
    assert len(out) == 10
    stage.close()


def test_queue_is_bounded():
    gate = threading.Event()
    rec = Recorder(gate=gate)
    stage = compress.CompressorThread(rec, lambda data: None, max_chunks=3)
    fed = []

    def reader():
        for chunk in _chunks(20):
            stage.put(chunk)
            fed.append(chunk)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        # The compressor holds chunk 0 (blocked), the queue chunks 1-3; the reader waits in put(chunk 4).
        deadline = time.monotonic() + 10
        while len(fed) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(fed) == 4
        assert stage._queue.qsize() == 3  # pylint: disable=protected-access
        assert thread.is_alive()
    finally:
        gate.set()
        thread.join(10)
    stage.finish()
    assert len(rec.seen) == 20 and rec.flushed


def test_close_drops_queued_chunks_without_flushing():
    gate = threading.Event()
    rec = Recorder(gate=gate)
    out = []
    stage = compress.CompressorThread(rec, out.append, max_chunks=4)
    for chunk in _chunks(5):
        stage.put(chunk)
    closer = threading.Thread(target=stage.close, daemon=True)
    closer.start()
    time.sleep(0.1)
    gate.set()
    closer.join(10)
    assert not closer.is_alive() and not stage._thread.is_alive()  # pylint: disable=protected-access
    # The chunk being compressed when close() came is not written; nothing else is compressed or flushed.
    assert len(rec.seen) <= 1 and out == [] and not rec.flushed and stage.error is None


def test_close_waits_for_the_thread_even_if_a_signal_interrupts_it():
    gate = threading.Event()
    stage = compress.CompressorThread(Recorder(gate=gate), lambda data: None)
    stage.put(b"x")
    real_join = stage._thread.join  # pylint: disable=protected-access
    calls = []

    def join(timeout=None):
        calls.append(timeout)
        if len(calls) == 1:
            gate.set()
            raise KeyboardInterrupt("SIGINT while waiting")
        return real_join(timeout)

    stage._thread.join = join  # pylint: disable=protected-access
    with pytest.raises(KeyboardInterrupt):
        stage.close()
    # The interrupt surfaces only once the thread has ended: the caller may then abort the upload.
    assert len(calls) == 2 and not stage._thread.is_alive()  # pylint: disable=protected-access
