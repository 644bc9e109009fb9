"""Code written against the 2.x library keeps working: its import paths, a store of the user's
own (a :class:`DataStore` subclass, as the 2.x docs invite), downloads into a symbolic link or
a FIFO, versions given as strings, and ``FILETRACKER_DIR=""`` for a client without a cache."""

import io
import os
import threading

import pytest

from filetracker.client import Client, DataStore
from filetracker.errors import InvalidNameError, NotFoundError
from filetracker.names import split_name, versioned_name

NOW = 1795550400


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


class Reader:
    """A stream with ``read`` only (no ``close``, no ``with``), as a user's store may return."""

    def __init__(self, data):
        self._f = io.BytesIO(data)

    def read(self, n=-1):
        return self._f.read(n)


class MemoryStore(DataStore):
    """A store of the user's own, written to the 2.x DataStore interface: add_file/add_stream,
    get_stream, file_version, file_size, exists, delete_file. Unversioned names get a
    version of its own choosing."""

    def __init__(self):
        self.files = {}    # unversioned name -> (version, bytes)
        self.added = []    # names as add_* received them

    def add_stream(self, name, stream):
        self.added.append(name)
        uname, version = split_name(name)
        version = NOW if version is None else version
        old = self.files.get(uname)
        if old is None or old[0] < version:
            self.files[uname] = (version, stream.read())
        return versioned_name(uname, self.files[uname][0])

    def get_stream(self, name):
        uname, version = split_name(name)
        if uname not in self.files or version not in (None, self.files[uname][0]):
            raise NotFoundError(name)
        v, data = self.files[uname]
        return Reader(data), versioned_name(uname, v)

    def exists(self, name):
        uname, version = split_name(name)
        return uname in self.files and version in (None, self.files[uname][0])

    def file_version(self, name):
        return self.get_stream(name)[1] and self.files[split_name(name)[0]][0]

    def file_size(self, name):
        return len(self.files[split_name(name)[0]][1])

    def delete_file(self, name):
        self.files.pop(split_name(name)[0], None)

    def list_files(self):
        return [self.FileInfoEntry(versioned_name(n, v), v, len(d)) for n, (v, d) in self.files.items()]


def test_2x_utils_import_path(tmp_path):
    from filetracker.utils import check_name, file_digest, mkdir, rmdirs
    from filetracker.utils import split_name as split2
    from filetracker.utils import versioned_name as versioned2

    assert split2("/a/b@12") == ("/a/b", 12) and versioned2("/a/b", 12) == "/a/b@12"
    with pytest.raises(ValueError):
        check_name("relative")
    path = write(tmp_path / "f", b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_digest(path) == digest
    with open(path, "rb") as f:
        assert file_digest(f) == digest
    deep = str(tmp_path / "x" / "y" / "z")
    mkdir(deep)
    mkdir(deep)  # exists: no error
    write(tmp_path / "x" / "keep", b"")
    rmdirs(deep, str(tmp_path))
    assert not os.path.exists(tmp_path / "x" / "y") and os.path.exists(tmp_path / "x" / "keep")


def test_versions_as_strings():
    assert versioned_name("/a", "1700000000") == "/a@1700000000"
    for bad in ("1.5", "-3", None, 2.0):
        with pytest.raises(InvalidNameError):
            versioned_name("/a", bad)


def test_a_store_of_ones_own_as_the_remote(tmp_path):
    store = MemoryStore()
    c = Client(local_store=None, remote_store=store)
    src = write(tmp_path / "src", b"payload\n")
    # the name goes to the store as given (2.x passed it through); the store picks the version
    assert c.put_file("/a/b", src) == "/a/b@%d" % NOW
    assert store.added == ["/a/b"]
    assert c.put_file("/a/c@7", src) == "/a/c@7" and store.added[-1] == "/a/c@7"
    # a stream with read() only is enough for get_file and get_stream
    assert c.get_file("/a/b", str(tmp_path / "out")) == "/a/b@%d" % NOW
    assert (tmp_path / "out").read_bytes() == b"payload\n"
    stream, vname = c.get_stream("/a/c")
    assert stream.read() == b"payload\n" and vname == "/a/c@7"


def test_a_store_of_ones_own_as_the_cache(tmp_path):
    cache = MemoryStore()
    c = Client(local_store=cache, remote_store=None, lock_manager=None)
    src = write(tmp_path / "src", b"cached\n")
    assert c.put_file("/k/v@5", src) == "/k/v@5"
    assert cache.files["/k/v"] == (5, b"cached\n")
    assert c.get_file("/k/v@5", str(tmp_path / "out")) == "/k/v@5"
    assert (tmp_path / "out").read_bytes() == b"cached\n"


def test_a_store_of_ones_own_as_the_cache_of_a_server(shared_server, tmp_path):
    cache = MemoryStore()
    c = Client(local_store=cache, remote_url=shared_server.url, lock_manager=None)
    src = write(tmp_path / "src", b"through\n")
    assert c.put_file("/own-cache/x@%d" % NOW, src) == "/own-cache/x@%d" % NOW
    assert cache.files["/own-cache/x"] == (NOW, b"through\n")
    cache.files.clear()
    other = Client(local_store=cache, remote_url=shared_server.url, lock_manager=None)
    assert other.get_file("/own-cache/x@%d" % NOW, str(tmp_path / "out")) == "/own-cache/x@%d" % NOW
    assert cache.files["/own-cache/x"] == (NOW, b"through\n")   # added to the cache on the way
    stream, _ = other.get_stream("/own-cache/x@%d" % NOW, serve_from_cache=True)
    assert stream.read() == b"through\n"


def test_download_into_a_symbolic_link_replaces_its_target(shared_server, tmp_path):
    c = Client(cache_dir=str(tmp_path / "cache"), remote_url=shared_server.url)
    c.put_file("/dest/link@%d" % NOW, write(tmp_path / "src", b"new\n"))
    target = write(tmp_path / "target", b"old\n")
    link = tmp_path / "link"
    os.symlink(target, link)
    assert c.get_file("/dest/link", str(link)) == "/dest/link@%d" % NOW
    assert os.path.islink(link) and (tmp_path / "target").read_bytes() == b"new\n"


def test_download_into_a_fifo_writes_into_it(shared_server, tmp_path):
    c = Client(cache_dir=str(tmp_path / "cache"), remote_url=shared_server.url)
    c.put_file("/dest/fifo@%d" % NOW, write(tmp_path / "src", b"through the pipe\n" * 1000))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    got = []
    # a daemon: if the FIFO were replaced, its open would wait for ever on the unlinked one
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    try:
        assert c.get_file("/dest/fifo", fifo) == "/dest/fifo@%d" % NOW
    finally:
        reader.join(timeout=30)
    assert got == [b"through the pipe\n" * 1000]
    assert os.path.exists(fifo) and not os.path.isfile(fifo)   # still the FIFO, not a plain file
    # with add_to_cache the file went through the cache: a versioned get finds it there
    assert c.local_store.exists("/dest/fifo@%d" % NOW)


def test_empty_filetracker_dir_means_no_cache(shared_server, monkeypatch, tmp_path):
    monkeypatch.setenv("FILETRACKER_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    c = Client(remote_url=shared_server.url)
    assert c.local_store is None
    c.put_file("/nocache/f@%d" % NOW, write(tmp_path / "src", b"x"))
    assert c.get_file("/nocache/f", str(tmp_path / "out")) == "/nocache/f@%d" % NOW
    assert not os.path.exists(tmp_path / "home" / ".filetracker-store")
    monkeypatch.delenv("FILETRACKER_DIR")
    assert Client(remote_url=shared_server.url).local_store is not None   # unset: the default cache
