"""Early writeback (filetracker/writeback.py): which ranges are handed to the kernel, and
that an upload written through it keeps its bytes, hash and durability point."""

import hashlib
import os
import sys

import pytest

from filetracker.storage.errors import StorageError
from filetracker.storage.upload import Upload
from filetracker.writeback import Writeback, start_writeback


def _recorder():
    calls = []
    return calls, (lambda fd, offset, length: calls.append((fd, offset, length)))


def test_ranges_started_every_threshold_and_contiguous():
    calls, start = _recorder()
    flushes = []
    wb = Writeback(7, lambda: flushes.append(1), every=100, start=start, page=10)
    for size in (30, 99, 100, 150, 199, 265, 1000, 1099):
        wb.written(size)
    # whole pages only: 265 starts [100, 260), the page 260-270 waits for the next write
    assert calls == [(7, 0, 100), (7, 100, 160), (7, 260, 740)]
    assert len(flushes) == 3  # flushed only when writeback starts


def test_pieces_of_any_size_give_page_aligned_ranges():
    calls, start = _recorder()
    wb = Writeback(3, lambda: None, start=start, page=4096)
    size = 0
    for _ in range(200):
        size += 100_001  # Tornado's partial reads: sizes that are not multiples of a page
        wb.written(size)
    assert [c[1:] for c in calls] == [(0, 4198400), (4198400, 4198400), (8396800, 4202496),
                                      (12599296, 4198400)]
    assert all(off % 4096 == 0 and length % 4096 == 0 for _, off, length in calls)
    # contiguous, and what is left (up to 20,000,200 bytes) is the final fsync's
    assert all(a[1] + a[2] == b[1] for a, b in zip(calls, calls[1:], strict=False))


def test_small_files_never_start_writeback():
    calls, start = _recorder()
    wb = Writeback(3, lambda: None, start=start)
    wb.written(64 * 1024)
    wb.written(4 * 1024 * 1024 - 1)
    assert calls == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_start_writeback_on_a_real_file(tmp_path):
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.write(b"x" * 10000)
        f.flush()
        assert start_writeback(f.fileno(), 0, 10000) is True
        assert start_writeback(f.fileno(), 0, 0) is False  # nothing to do
    assert path.read_bytes() == b"x" * 10000


def test_start_writeback_refused_is_not_an_error():
    r, w = os.pipe()  # not a file (ESPIPE): the kernel refuses, the caller carries on
    try:
        assert start_writeback(w, 0, 4096) is False
    finally:
        os.close(r)
        os.close(w)


def test_upload_across_many_writeback_starts_keeps_bytes_and_hash(tmp_path):
    piece = os.urandom(1 << 20)
    path = str(tmp_path / "upload.tmp")
    up = Upload(path)
    for _ in range(9):  # 9 MiB: two writeback starts with the 4 MiB default, a tail left for fsync
        up.write(piece)
    up.finish()
    assert up.finished and up.size == 9 << 20
    assert up.sha256 == hashlib.sha256(piece * 9).hexdigest()
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == up.sha256


def test_rest_starts_everything_not_started_once():
    calls, start = _recorder()
    flushes = []
    wb = Writeback(5, lambda: flushes.append(1), every=100, start=start, page=10)
    wb.written(105)          # [0, 100) started, the page 100-110 waits
    wb.rest(105)             # complete: the rest, partial page included
    wb.rest(105)             # nothing left
    assert calls == [(5, 0, 100), (5, 100, 5)]
    assert len(flushes) == 2
    wb2 = Writeback(5, lambda: None, start=start)
    wb2.rest(0)              # an empty file: nothing to start
    assert calls == [(5, 0, 100), (5, 100, 5)]


def test_small_upload_started_then_finished_keeps_bytes(tmp_path):
    path = str(tmp_path / "small.tmp")
    up = Upload(path)
    up.write(b"abc" * 1000)
    up.start_writeback()
    assert not up.finished
    up.finish()
    assert up.finished and up.size == 3000
    with open(path, "rb") as f:
        assert f.read() == b"abc" * 1000
    with pytest.raises(StorageError):
        up.start_writeback()  # finished: no more writes or writeback
