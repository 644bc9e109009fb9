"""LocalDataStore: versions as mtimes, atomic replacement, hard links, deletes, listing."""

import io
import os

import pytest

from filetracker.client.local_data_store import LocalDataStore
from filetracker.errors import InvalidNameError, NotFoundError
from tests.support.stores import Fsyncs


@pytest.fixture
def store(tmp_path):
    return LocalDataStore(str(tmp_path / "cache"))


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_layout_and_versions(store, tmp_path):
    assert store.add_stream("/a/b@100", io.BytesIO(b"one")) == "/a/b@100"
    path = os.path.join(store.dir, "a", "b")
    assert os.path.isfile(path) and int(os.stat(path).st_mtime) == 100
    assert store.exists("/a/b") and store.exists("/a/b@100") and not store.exists("/a/b@99")
    assert store.file_version("/a/b@5") == 100
    assert store.file_size("/a/b@100") == 3
    with pytest.raises(NotFoundError):
        store.file_size("/a/b@101")


def test_older_version_never_replaces_newer(store):
    store.add_stream("/x@200", io.BytesIO(b"new"))
    assert store.add_stream("/x@100", io.BytesIO(b"old")) == "/x@200"
    assert store.add_stream("/x@200", io.BytesIO(b"same-version")) == "/x@200"
    f, vname = store.get_stream("/x")
    with f:
        assert (f.read(), vname) == (b"new", "/x@200")
    assert store.add_stream("/x@300", io.BytesIO(b"newer")) == "/x@300"
    assert store.get_stream("/x@300")[0].read() == b"newer"
    assert os.listdir(store.tmp_dir) == []  # staged files consumed either way


def test_unversioned_add_gets_a_fresh_version(store):
    store.add_stream("/u@4102444800", io.BytesIO(b"future"))
    assert store.add_stream("/u", io.BytesIO(b"later")) == "/u@4102444801"
    v = store.add_stream("/w", io.BytesIO(b"now"))
    assert v.startswith("/w@") and int(v.split("@")[1]) > 1700000000


def test_get_file_copies_and_is_atomic(store, tmp_path):
    src = write(tmp_path / "src", b"content")
    store.add_file("/f@50", src)
    # add_file copies: the user's file is not tied to the cache
    assert os.stat(src).st_ino != os.stat(os.path.join(store.dir, "f")).st_ino
    out = str(tmp_path / "out" / "dest")
    assert store.get_file("/f@50", out) == "/f@50"
    assert open(out, "rb").read() == b"content"
    # a copy: an edit of ``out`` leaves the cache's file (and its mtime, the version) alone
    assert os.stat(out).st_ino != os.stat(os.path.join(store.dir, "f")).st_ino
    assert os.stat(out).st_mtime == 50
    with open(out, "ab") as f:
        f.write(b" edited")
    assert store.get_stream("/f")[1] == "/f@50" and open(os.path.join(store.dir, "f"), "rb").read() == b"content"
    # again onto the same file: nothing left behind
    store.get_file("/f", out)
    assert sorted(os.listdir(tmp_path / "out")) == ["dest"]
    with pytest.raises(NotFoundError):
        store.get_file("/f@51", str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")


def test_missing_and_invalid(store):
    with pytest.raises(NotFoundError):
        store.get_stream("/nope")
    with pytest.raises(NotFoundError):
        store.file_version("/nope")
    assert not store.exists("/nope")
    with pytest.raises(InvalidNameError):
        store.exists("/a/../../etc/passwd")
    with pytest.raises(InvalidNameError):
        store.add_stream("relative", io.BytesIO(b""))


def test_delete(store):
    store.add_stream("/d/e/f@10", io.BytesIO(b"x"))
    store.delete_file("/d/e/f@9")  # older than stored: kept
    assert store.exists("/d/e/f")
    store.delete_file("/d/e/f@10")
    assert not store.exists("/d/e/f")
    assert os.listdir(store.dir) == []  # empty folders pruned
    store.delete_file("/d/e/f")  # missing: ignored


def test_list_files(store):
    store.add_stream("/a@10", io.BytesIO(b"1"))
    store.add_stream("/b/c@20", io.BytesIO(b"22"))
    entries = sorted(store.list_files())
    assert [(e.name, e.mtime, e.size) for e in entries] == [("/a@10", 10.0, 1), ("/b/c@20", 20.0, 2)]


def test_clean_temporary(store):
    staged = store.stage_stream(io.BytesIO(b"abandoned"))
    assert store.clean_temporary(older_than=3600) == 0
    os.utime(staged, (1, 1))
    # ctime is fresh too: a just-abandoned file survives, an old one goes
    assert store.clean_temporary(older_than=-10) == 1
    assert os.listdir(store.tmp_dir) == []


def test_a_linked_download_is_fsynced_with_its_version_before_it_is_cached(store, tmp_path, monkeypatch):
    """A download linked into the cache (Client.get_file) was never fsynced: after a power cut
    the cache held the name, at the right version, with 0 bytes, and served them (found by an
    strace + power-cut audit).  Now the file is fsynced after its version is set."""
    downloaded = tmp_path / "downloaded"
    downloaded.write_bytes(b"d" * 5000)
    synced = Fsyncs(monkeypatch)
    assert store.commit(store.stage_file(str(downloaded), link=True), "/dl/f@1234") == "/dl/f@1234"
    st = os.stat(os.path.join(store.dir, "dl/f"))
    assert (st.st_ino, 1234, 5000) in synced.files


def test_new_folders_and_deletes_are_made_durable(store, tmp_path, monkeypatch):
    """Only the last new folder was fsynced (the entries of the ones above it were not), and a
    delete was not: a power cut could lose a cached file's folders, or bring a deleted file back."""
    src = tmp_path / "src"
    src.write_bytes(b"x")
    synced = Fsyncs(monkeypatch)
    store.add_file("/a/b/c/f@5", str(src))
    top = store.dir
    for folder in (top, top + "/a", top + "/a/b", top + "/a/b/c"):
        assert folder in synced.dirs, (folder, synced.dirs)
    synced.dirs.clear()
    store.delete_file("/a/b/c/f")
    assert not os.path.exists(top + "/a") and synced.dirs == [top]


def test_a_folder_pruned_by_another_process_while_it_is_being_made_is_made_again(store, monkeypatch):
    """Another process's delete prunes empty folders: one vanishing under the makedirs of a
    put (not only before its rename) reached the caller as a raw FileNotFoundError."""
    from filetracker.client import local_data_store
    real = local_data_store.makedirs_durably
    calls = []

    def pruned_meanwhile(path):
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", path)
        real(path)
    monkeypatch.setattr(local_data_store, "makedirs_durably", pruned_meanwhile)
    assert store.add_stream("/deep/er/x@5", io.BytesIO(b"x")) == "/deep/er/x@5"
    assert len(calls) == 2 and store.file_version("/deep/er/x") == 5
