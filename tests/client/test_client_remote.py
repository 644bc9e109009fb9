"""Our Client against a real filetracker-server subprocess (acceptance 1 and 2 of issue 2)."""

import gzip
import hashlib
import multiprocessing
import os
import time

import pytest
import requests

from filetracker.client import Client
from filetracker.client.remote_data_store import RemoteDataStore
from filetracker.errors import NotFoundError, RemoteError


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(shared_server, tmp_path, compress):
    c = Client(cache_dir=str(tmp_path / "cache"), remote_url=shared_server.url)
    data = b"line of text\n" * 5000
    src = write(tmp_path / "src", data)
    name = "/rt/%s/file.txt" % compress
    vname = c.put_file(name + "@1700000000", src, compress_hint=compress)
    assert vname == name + "@1700000000"
    assert c.file_version(name) == 1700000000
    assert c.file_size(name) == len(data)
    assert c.file_size(vname) == len(data)
    out = str(tmp_path / "out")
    assert c.get_file(name, out) == vname
    assert open(out, "rb").read() == data
    stream, v = c.get_stream(name)
    with stream:
        assert (stream.read(), v) == (data, vname)
    # stale put: the server keeps the newer version and says so; the cache is untouched
    other = write(tmp_path / "other", b"older")
    assert c.put_file(name + "@1600000000", other) == vname
    assert open(os.path.join(c.local_store.dir, name[1:]), "rb").read() == data
    # versioned get of a version the server does not have
    with pytest.raises(NotFoundError):
        c.get_file(name + "@1600000000", str(tmp_path / "x"), force_refresh=True)
    assert c.list_remote_files(subpath="/rt/%s" % compress) == ["file.txt"]
    assert c.list_remote_files(subpath="/rt/%s" % compress, absolute_paths=True) == ["rt/%s/file.txt" % compress]
    c.delete_file(name)
    with pytest.raises(NotFoundError):
        c.file_version(name)
    with pytest.raises(NotFoundError):
        c.delete_file(name)
    assert not os.path.exists(os.path.join(c.local_store.dir, name[1:]))


def test_upload_is_gzip_with_checksum(shared_server, tmp_path):
    """What the wire carries: gzip body, Logical-Size and SHA256-Checksum (checked by a recorder)."""
    seen = {}

    class Recorder(requests.Session):
        def request(self, method, url, **kw):
            if method == "PUT":
                seen.update(kw.get("headers") or {})
                body = kw["data"].read()
                seen["body"] = body
                kw["data"] = body
            return super().request(method, url, **kw)

    store = RemoteDataStore(shared_server.url, session=Recorder())
    data = os.urandom(1000) * 50
    src = write(tmp_path / "src", data)
    assert store.add_file("/wire/a@1700000001", src) == "/wire/a@1700000001"
    assert seen["Content-Encoding"] == "gzip" and seen["Logical-Size"] == str(len(data))
    assert seen["SHA256-Checksum"] == hashlib.sha256(data).hexdigest()
    assert gzip.decompress(seen["body"]) == data
    f, _ = store.get_stream("/wire/a")
    assert f.read() == data


def test_errors_map_to_exceptions(shared_server, tmp_path):
    c = Client(local_store=None, remote_url=shared_server.url)
    with pytest.raises(NotFoundError):
        c.get_stream("/no/such")
    with pytest.raises(NotFoundError):
        c.file_size("/no/such")
    dead = Client(local_store=None, remote_url="http://127.0.0.1:1")
    with pytest.raises(RemoteError) as e:
        dead.file_version("/x")
    assert e.value.status is None
    # credentials in the URL are accepted (and sent as Basic auth)
    user = Client(local_store=None, remote_url=shared_server.url.replace("http://", "http://u:tok@"))
    with pytest.raises(NotFoundError):
        user.file_version("/no/such")


@pytest.mark.slow
def test_100_mib_file(shared_server, tmp_path):
    c = Client(cache_dir=str(tmp_path / "cache"), remote_url=shared_server.url)
    src = str(tmp_path / "big")
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(100):
            f.write(block[i:] + block[:i])
    vname = c.put_file("/big/file", src)
    out = str(tmp_path / "big.out")
    assert c.get_file("/big/file", out, add_to_cache=False) == vname
    assert sha(out) == sha(src)
    assert c.file_size("/big/file") == 100 << 20


def test_cache_serves_versioned_get_with_server_stopped(server, tmp_path):
    c = Client(cache_dir=str(tmp_path / "cache"), remote_url=server.url)
    src = write(tmp_path / "src", b"cached bytes")
    vname = c.put_file("/c/file", src)
    assert int(vname.split("@")[1]) > 0
    # a fresh client on the same cache, server gone
    server.stop()
    c2 = Client(cache_dir=str(tmp_path / "cache"), remote_url=server.url)
    out = str(tmp_path / "out")
    assert c2.get_file(vname, out) == vname
    assert open(out, "rb").read() == b"cached bytes"
    stream, v = c2.get_stream(vname)
    assert (stream.read(), v) == (b"cached bytes", vname)
    stream.close()
    assert c2.file_size(vname) == 12
    # an unversioned get must ask the server, which is down
    with pytest.raises(RemoteError):
        c2.get_file("/c/file", out)
    with pytest.raises(RemoteError):
        c2.get_file(vname, out, force_refresh=True)


def test_unversioned_get_sees_the_newer_version(shared_server, tmp_path):
    a = Client(cache_dir=str(tmp_path / "a"), remote_url=shared_server.url)
    b = Client(cache_dir=str(tmp_path / "b"), remote_url=shared_server.url)
    a.put_file("/fresh@1700000100", write(tmp_path / "1", b"v1"))
    out = str(tmp_path / "out")
    assert b.get_file("/fresh", out) == "/fresh@1700000100"
    a.put_file("/fresh@1700000200", write(tmp_path / "2", b"v2"))
    assert b.get_file("/fresh", out) == "/fresh@1700000200"
    assert open(out, "rb").read() == b"v2"
    # serve_from_cache downloads into the cache and serves from there
    s, v = b.get_stream("/fresh", serve_from_cache=True)
    assert (s.read(), v) == (b"v2", "/fresh@1700000200")
    s.close()
    assert b.local_store.exists("/fresh@1700000200")


def _content(name, version):
    # Deterministic content per (name, version), with a checksum line, so a
    # reader can tell a torn or mismatched file from the bytes alone.
    body = ("%s@%d\n" % (name, version)).encode() * (2000 + version % 5000)
    return body + hashlib.sha256(body).hexdigest().encode()


def _hammer(url, cache, workdir, seconds, seed, result):
    import random

    rnd = random.Random(seed)
    c = Client(cache_dir=cache, remote_url=url)
    names = ["/hammer/%d" % i for i in range(3)]
    errors, ops = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        name = rnd.choice(names)
        path = os.path.join(workdir, "f%d" % ops)
        try:
            if rnd.random() < 0.3:
                version = 1700000000 + rnd.randrange(1, 10 ** 6)
                src = path + ".src"
                write(src, _content(name, version))
                c.put_file("%s@%d" % (name, version), src)
                os.unlink(src)
            else:
                try:
                    vname = c.get_file(name, path) if rnd.random() < 0.5 else None
                    if vname is None:
                        version = c.file_version(name)
                        vname = c.get_file("%s@%d" % (name, version), path)
                except NotFoundError:
                    ops += 1
                    continue
                version = int(vname.split("@")[1])
                got = open(path, "rb").read()
                if got != _content(name, version):
                    errors.append("wrong bytes for %s (%d bytes)" % (vname, len(got)))
                os.unlink(path)
        except NotFoundError:
            pass  # a newer version replaced the one we asked for: fine
        except Exception as e:  # report, do not hide
            errors.append("%s: %r" % (name, e))
        ops += 1
    result.put((ops, errors))


@pytest.mark.slow
def test_two_processes_hammer_one_cache(shared_server, tmp_path):
    cache = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = []
    for i in range(2):
        work = tmp_path / ("w%d" % i)
        work.mkdir()
        p = ctx.Process(target=_hammer, args=(shared_server.url, cache, str(work), 8.0, i, q), daemon=True)
        p.start()
        procs.append(p)
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    total = sum(ops for ops, _ in results)
    errors = [e for _, errs in results for e in errs]
    assert errors == []
    assert total > 50, total
    # every cached file is exactly its version's content
    c = Client(cache_dir=cache, remote_url=shared_server.url)
    for entry in c.list_local_files():
        uname, version = entry.name.split("@")
        with open(c.local_store.dir + uname, "rb") as f:
            assert f.read() == _content(uname, int(version))
    print("hammer: %d operations in 2 x 8 s, cache holds %d files" % (total, len(c.list_local_files())))
