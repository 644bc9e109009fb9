"""Blobs kept readable after they were replaced (filetracker/storage/retired.py): exact behaviour."""

import hashlib
import os
import threading

import pytest

from filetracker.records import Record
from filetracker.storage import ObjectStore, retired
from filetracker.storage.retired import RetiredBlobs


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def blob(folder, name, data=b"x"):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_retire_open_and_sweep(tmp_path):
    clock = Clock()
    r = RetiredBlobs(str(tmp_path / "retired"), keep_seconds=60, clock=clock)
    r.retire(blob(str(tmp_path), "a" * 64, b"old bytes"), "a" * 64)
    assert not (tmp_path / ("a" * 64)).exists() and len(r) == 1
    with r.open("a" * 64) as f:
        assert f.read() == b"old bytes"
    clock.now += 30
    r.retire(blob(str(tmp_path), "b" * 64), "b" * 64)
    clock.now += 29.9
    assert r.sweep() == 0 and len(r) == 2
    clock.now += 0.1                        # a is 60 s old, b 30 s
    assert r.sweep() == 1 and sorted(os.listdir(r.folder)) == ["b" * 64]
    with pytest.raises(FileNotFoundError):
        r.open("a" * 64)
    r.retire(str(tmp_path / "missing"), "c" * 64)   # gone already: nothing to keep
    assert len(r) == 1


def test_retiring_again_restarts_the_period(tmp_path):
    clock = Clock()
    r = RetiredBlobs(str(tmp_path / "retired"), keep_seconds=60, clock=clock)
    r.retire(blob(str(tmp_path), "a" * 64), "a" * 64)
    clock.now += 50
    r.retire(blob(str(tmp_path), "a" * 64), "a" * 64)   # the same content stored and replaced again
    clock.now += 20
    assert r.sweep() == 0 and os.listdir(r.folder) == ["a" * 64]


def test_a_sweep_never_unlinks_a_copy_retired_meanwhile(tmp_path, monkeypatch):
    """The sweep unlinked after letting go of its lock: the same content retired again in between
    (uploaded under another name, then replaced) was unlinked at once (found by a review)."""
    clock = Clock()
    r = RetiredBlobs(str(tmp_path / "retired"), keep_seconds=60, clock=clock)
    r.retire(blob(str(tmp_path), "a" * 64, b"first"), "a" * 64)
    clock.now += 60
    in_sweep, go_on = threading.Event(), threading.Event()
    real_discard = retired.discard

    def paused_discard(path):
        if threading.current_thread().name == "sweeper":
            in_sweep.set()
            go_on.wait(5)
        real_discard(path)

    monkeypatch.setattr(retired, "discard", paused_discard)
    sweeper = threading.Thread(target=r.sweep, name="sweeper")
    sweeper.start()
    assert in_sweep.wait(5)                  # the expired copy is about to be unlinked
    again = threading.Thread(target=r.retire, args=(blob(str(tmp_path), "a" * 64, b"again"), "a" * 64))
    again.start()
    again.join(0.3)                          # it waits for the sweep now
    go_on.set()
    sweeper.join(5)
    again.join(5)
    with r.open("a" * 64) as f:
        assert f.read() == b"again"
    assert len(r) == 1


def test_stats_count_what_is_kept(tmp_path):
    """Retired blobs take disk that the live data does not account for: status and metrics show them."""
    folder = tmp_path / "retired"
    folder.mkdir()
    blob(str(folder), "c" * 64, b"left by a crash")    # 15 bytes
    clock = Clock()
    r = RetiredBlobs(str(folder), keep_seconds=60, clock=clock)
    assert r.stats() == {"files": 1, "bytes": 15}
    r.retire(blob(str(tmp_path), "a" * 64, b"x" * 1000), "a" * 64)
    clock.now += 30
    r.retire(blob(str(tmp_path), "b" * 64, b"y" * 10), "b" * 64)
    assert r.stats() == {"files": 3, "bytes": 1025}
    r.retire(blob(str(tmp_path), "a" * 64, b"x" * 1000), "a" * 64)   # again: counted once
    assert r.stats() == {"files": 3, "bytes": 1025}
    r.retire(str(tmp_path / "missing"), "d" * 64)
    assert r.stats() == {"files": 3, "bytes": 1025}
    clock.now += 30                                      # the crash's file has had 60 s
    assert r.sweep() == 1 and r.stats() == {"files": 2, "bytes": 1010}
    r.sweep(everything=True)
    assert r.stats() == {"files": 0, "bytes": 0}


def test_store_stats_report_retired_blobs(tmp_path):
    for keep in (0, 60):
        store = ObjectStore(str(tmp_path / str(keep)), keep_replaced=keep)
        try:
            for version, data in ((100, b"a" * 300), (200, b"b" * 20)):
                record = Record("/f", version, hashlib.sha256(data).hexdigest(), len(data), False)
                store.put_record(record, blob(str(tmp_path), "up", data))
            stats = store.stats()
            assert (stats["files"], stats["bytes"]) == (1, 20)
            assert (stats["retired_files"], stats["retired_bytes"]) == ((1, 300) if keep else (0, 0))
        finally:
            store.close()


def test_retired_blobs_go_when_the_store_opens_with_keep_replaced_0(tmp_path):
    store = ObjectStore(str(tmp_path / "s"), keep_replaced=60)
    store.close()
    blob(str(tmp_path / "s" / "retired"), "a" * 64)   # left by a stop: nothing else would remove it
    ObjectStore(str(tmp_path / "s"), keep_replaced=0).close()
    assert not (tmp_path / "s" / "retired").exists()


def test_files_found_at_start_go_one_period_later(tmp_path):
    folder = tmp_path / "retired"
    folder.mkdir()
    blob(str(folder), "a" * 64)           # left by a crash
    clock = Clock()
    r = RetiredBlobs(str(folder), keep_seconds=60, clock=clock)
    assert len(r) == 1 and r.sweep() == 0
    clock.now += 60
    assert r.sweep() == 1 and os.listdir(folder) == []


def test_a_nearly_full_disk_unlinks_at_once_and_drops_every_retired_blob(tmp_path):
    clock = Clock()
    r = RetiredBlobs(str(tmp_path / "retired"), keep_seconds=60, clock=clock)
    r.retire(blob(str(tmp_path), "a" * 64), "a" * 64)
    r.min_free_bytes = 1 << 62            # more than any disk has free
    r.retire(blob(str(tmp_path), "b" * 64), "b" * 64)
    assert len(r) == 0 and os.listdir(r.folder) == [] and not (tmp_path / ("b" * 64)).exists()


@pytest.mark.parametrize("keep", [0, 60])
def test_store_keeps_a_replaced_blob_readable(tmp_path, keep):
    store = ObjectStore(str(tmp_path / "s"), keep_replaced=keep)
    try:
        old, new = b"version one" * 100, b"version two" * 100
        sha_old = hashlib.sha256(old).hexdigest()
        for version, data in ((100, old), (200, new)):
            record = Record("/f", version, hashlib.sha256(data).hexdigest(), len(data), False)
            store.put_record(record, blob(str(tmp_path), "up", data))
        assert not store.has_blob(sha_old) and not os.path.exists(store.blob_path(sha_old))
        if keep:
            with store.open_blob(sha_old) as f:    # a gateway fetching the rest of version one
                assert f.read() == old
            assert os.listdir(tmp_path / "s" / "retired") == [sha_old]
            store.retired.sweep(now=store.retired._clock() + keep)
        with pytest.raises(FileNotFoundError):
            store.open_blob(sha_old)
        assert store.collect_garbage() == (0, 0)
    finally:
        store.close()
