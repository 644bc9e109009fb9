"""cluster.node.batches.store_many: small files many at a time, every one fsynced before its
record commits; one failing file never fails the others, nothing is left in tmp/, and a call
never holds more than WRITE_AHEAD files open."""

import errno
import hashlib
import os

import pytest

from cluster.node.batches import WRITE_AHEAD, store_many
from cluster.node.writebatch import Wanted
from filetracker.storage import ObjectStore, StoreFull
from filetracker.storage.upload import Upload


def _items(n, prefix="/m/f"):
    return [(Wanted("%s%d" % (prefix, i), 10, None, None, None), b"content %d" % i) for i in range(n)]


def _tmp(store_dir):
    return os.listdir(os.path.join(store_dir, "tmp"))


@pytest.fixture
def store(tmp_path):
    s = ObjectStore(str(tmp_path / "s"))
    yield s
    s.close()


def test_all_stored_in_order_with_their_records(store, tmp_path):
    results = store_many(store, _items(40))
    assert [r[0].name for r in results] == ["/m/f%d" % i for i in range(40)]
    assert all(applied for _, applied in results)
    for i in range(40):
        rec = store.get_record("/m/f%d" % i)
        assert rec.sha256 == hashlib.sha256(b"content %d" % i).hexdigest()
        with store.open_blob(rec.sha256) as f:
            assert f.read() == b"content %d" % i
    assert _tmp(str(tmp_path / "s")) == []


def test_never_more_than_write_ahead_files_open(store, monkeypatch):
    peak, open_now = [0], [0]
    real_init, real_finish, real_abort = Upload.__init__, Upload.finish, Upload.abort

    def init(self, path):
        real_init(self, path)
        open_now[0] += 1
        peak[0] = max(peak[0], open_now[0])

    def finish(self):
        real_finish(self)
        open_now[0] -= 1

    monkeypatch.setattr(Upload, "__init__", init)
    monkeypatch.setattr(Upload, "finish", finish)
    monkeypatch.setattr(Upload, "abort", lambda self: real_abort(self))
    results = store_many(store, _items(3 * WRITE_AHEAD + 5))
    assert all(isinstance(r, tuple) for r in results)
    assert peak[0] == WRITE_AHEAD


@pytest.mark.parametrize("where", ["write", "start_writeback", "finish"])
def test_a_full_disk_fails_that_file_alone(store, tmp_path, monkeypatch, where):
    real = getattr(Upload, where)
    calls = [0]

    def failing(self, *args):
        calls[0] += 1
        if calls[0] == 3:  # the third file's disk is full at this step
            self.abort()
            raise StoreFull("no space left on the store's disk")
        return real(self, *args)

    monkeypatch.setattr(Upload, where, failing)
    results = store_many(store, _items(20))
    assert isinstance(results[2], StoreFull)
    assert all(isinstance(r, tuple) for i, r in enumerate(results) if i != 2)
    assert store.get_record("/m/f2") is None and store.get_record("/m/f3") is not None
    assert _tmp(str(tmp_path / "s")) == []


def test_an_os_error_is_that_files_answer(store, tmp_path, monkeypatch):
    real = Upload.finish

    def failing(self):
        if self.path.endswith("x"):  # about one file in 16 by its random name
            self.abort()
            raise OSError(errno.EIO, "I/O error")
        return real(self)

    monkeypatch.setattr(Upload, "finish", failing)
    results = store_many(store, _items(64))
    failed = [i for i, r in enumerate(results) if isinstance(r, OSError)]
    assert all(isinstance(r, tuple) for i, r in enumerate(results) if i not in failed)
    assert all(store.get_record("/m/f%d" % i) is None for i in failed)
    assert _tmp(str(tmp_path / "s")) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("at", [3, WRITE_AHEAD + 2])
def test_an_interrupted_batch_leaves_nothing(store, tmp_path, monkeypatch, exc, at):
    real = Upload.start_writeback
    calls = [0]

    def interrupted(self):
        calls[0] += 1
        if calls[0] == at:
            raise exc("interrupted")
        return real(self)

    monkeypatch.setattr(Upload, "start_writeback", interrupted)
    with pytest.raises(exc):
        store_many(store, _items(40))
    assert _tmp(str(tmp_path / "s")) == []
    assert store.get_record("/m/f0") is None  # nothing committed
