"""DummyClient: the in-memory client for users' tests."""

import threading

import pytest

from filetracker.client import Client
from filetracker.client.dummy import DummyClient as ReExported
from filetracker.dummy import DummyClient
from filetracker.errors import InvalidNameError, NotFoundError


def test_api(tmp_path):
    c = DummyClient()
    assert ReExported is DummyClient and isinstance(c, Client)
    src = tmp_path / "src"
    src.write_bytes(b"hello")
    assert c.put_file("/a/b@100", str(src)) == "/a/b@100"
    assert c.put_file("/a/b@50", str(src)) == "/a/b@100"  # older: ignored
    other = tmp_path / "other"
    other.write_bytes(b"HELLO")
    assert c.put_file("/a/b@100", str(other)) == "/a/b@100"  # the same version: replaced (as 2.x)
    assert c.get_stream("/a/b")[0].read() == b"HELLO"
    assert c.put_file("/a/b@100", str(src)) == "/a/b@100"
    assert c.file_version("/a/b") == 100
    assert c.file_size("/a/b@100") == 5
    out = tmp_path / "o" / "out"
    assert c.get_file("/a/b", str(out)) == "/a/b@100"
    assert out.read_bytes() == b"hello"
    stream, vname = c.get_stream("/a/b@100")
    assert (stream.read(), vname) == (b"hello", "/a/b@100")
    with pytest.raises(NotFoundError):
        c.get_stream("/a/b@99")
    with pytest.raises(NotFoundError):
        c.get_file("/missing", str(out))
    with pytest.raises(InvalidNameError):
        c.put_file("bad", str(src))
    v2 = c.put_file("/a/b", str(src))
    assert int(v2.split("@")[1]) > 100
    assert [e.name for e in c.list_local_files()] == [v2]
    assert c.list_remote_files(subpath="/a") == ["b"]
    assert c.list_remote_files(subpath="/a", absolute_paths=True) == ["a/b"]
    assert c.list_remote_files(version_cutoff_timestamp=100) == []
    c.delete_file("/a/b@1")  # older than stored: kept
    assert c.file_size("/a/b") == 5
    c.delete_file("/a/b")
    with pytest.raises(NotFoundError):
        c.file_version("/a/b")


def test_unversioned_puts_get_distinct_versions_across_threads(tmp_path):
    c = DummyClient()
    src = tmp_path / "src"
    src.write_bytes(b"x")
    results = []

    def work():
        for _ in range(50):
            results.append(c.put_file("/t", str(src)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 200
