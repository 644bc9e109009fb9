"""Protocol 2 against a real filetracker-server: basics, stale versions, ranges."""

import email.utils
import gzip
import hashlib
import os

import pytest
import requests

from tests.server.conftest import start_server

T0 = 1_732_400_000


def date(ts):
    return email.utils.formatdate(ts)


def put(url, name, data, version, headers=None, **kw):
    return requests.put(url + "/files" + name, data=data, params={"last_modified": date(version)},
                        headers=headers or {}, timeout=30, **kw)


def version_of(resp):
    return int(email.utils.mktime_tz(email.utils.parsedate_tz(resp.headers["Last-Modified"])))


def test_version_endpoint(shared_server):
    for path in ("/version", "/version/"):
        r = requests.get(shared_server.url + path, timeout=5)
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/json"
        assert r.json() == {"protocol_versions": [2]}


def test_put_get_head_list_delete(shared_server):
    url = shared_server.url
    r = put(url, "/basic/a.txt", b"hello world", T0)
    assert r.status_code == 200 and version_of(r) == T0
    r = requests.get(url + "/files/basic/a.txt", timeout=5)
    assert r.status_code == 200 and r.content == b"hello world"
    assert r.headers["Content-Length"] == "11" and "Content-Encoding" not in r.headers
    assert version_of(r) == T0
    # A versioned name in the path is accepted; the newest version is returned.
    r = requests.get(url + "/files/basic/a.txt@%d" % (T0 - 5), timeout=5)
    assert r.status_code == 200 and version_of(r) == T0
    r = requests.head(url + "/files/basic/a.txt", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Length"] == "11" and r.content == b""
    put(url, "/basic/sub/b.txt", b"b", T0 + 10)
    r = requests.get(url + "/list/basic", timeout=5)
    assert r.status_code == 200 and r.text == "a.txt\nsub/b.txt\n"
    r = requests.get(url + "/list/basic/", params={"last_modified": date(T0 + 5)}, timeout=5)
    assert r.text == "a.txt\n"
    r = requests.delete(url + "/files/basic/a.txt", params={"last_modified": date(T0 + 1)}, timeout=5)
    assert r.status_code == 200
    assert requests.get(url + "/files/basic/a.txt", timeout=5).status_code == 404
    assert requests.head(url + "/files/basic/a.txt", timeout=5).status_code == 404
    assert requests.get(url + "/list/basic", timeout=5).text == "sub/b.txt\n"
    assert requests.get(url + "/list/nothing/here", timeout=5).text == ""
    r = requests.delete(url + "/files/basic/never", params={"last_modified": date(T0)}, timeout=5)
    assert r.status_code == 404 and r.headers["X-Exception"]


def test_gzip_checksum_chunked_and_dedup(shared_server):
    url = shared_server.url
    data = os.urandom(300_000) + b"z" * 300_000
    sha = hashlib.sha256(data).hexdigest()
    r = put(url, "/gz/one", gzip.compress(data), T0,
            headers={"Content-Encoding": "gzip", "Logical-Size": str(len(data)), "SHA256-Checksum": sha})
    assert r.status_code == 200, r.text
    # Chunked transfer (a generator body), plain, same content under another name.
    r = put(url, "/gz/two", (data[i:i + 65536] for i in range(0, len(data), 65536)), T0,
            headers={"SHA256-Checksum": sha})
    assert r.status_code == 200, r.text
    for name in ("/gz/one", "/gz/two"):
        r = requests.get(url + "/files" + name, headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert r.content == data and "Content-Encoding" not in r.headers
    assert shared_server.blob_files().count(sha) == 1  # stored once
    assert shared_server.tmp_files() == []


def test_protocol1_last_modified_header(shared_server):
    r = requests.put(shared_server.url + "/files/p1/f", data=b"v1",
                     headers={"Last-Modified": date(T0 + 3)}, timeout=5)
    assert r.status_code == 200 and version_of(r) == T0 + 3


def test_stale_put_and_delete_versions(shared_server):
    """Acceptance 3: an older PUT changes nothing; DELETE honours its version."""
    url, name = shared_server.url, "/stale/f"
    assert put(url, name, b"new", T0 + 200).status_code == 200
    r = put(url, name, b"old", T0 + 100)
    assert r.status_code == 200 and version_of(r) == T0 + 200
    assert requests.get(url + "/files" + name, timeout=5).content == b"new"
    # An older DELETE deletes nothing and says which version is stored.
    r = requests.delete(url + "/files" + name, params={"last_modified": date(T0 + 150)}, timeout=5)
    assert r.status_code == 200 and version_of(r) == T0 + 200
    assert requests.get(url + "/files" + name, timeout=5).content == b"new"
    # A newer DELETE deletes.
    r = requests.delete(url + "/files" + name, params={"last_modified": date(T0 + 300)}, timeout=5)
    assert r.status_code == 200
    assert requests.get(url + "/files" + name, timeout=5).status_code == 404
    # A PUT older than (or as old as) the tombstone is refused with 409.
    for v in (T0 + 250, T0 + 300):
        r = put(url, name, b"zombie", v)
        assert r.status_code == 409 and "deleted" in r.headers["X-Exception"]
    assert requests.get(url + "/files" + name, timeout=5).status_code == 404
    # A newer PUT resurrects the name.
    r = put(url, name, b"reborn", T0 + 301)
    assert r.status_code == 200 and version_of(r) == T0 + 301
    assert requests.get(url + "/files" + name, timeout=5).content == b"reborn"
    # An equal-version PUT: the larger sha256 wins, deterministically.
    a, b = b"reborn", b"other"
    winner = max((a, b), key=lambda d: hashlib.sha256(d).hexdigest())
    put(url, name, b, T0 + 301)
    assert requests.get(url + "/files" + name, timeout=5).content == winner


RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.mark.parametrize("header,status,body_slice,content_range", [
    ("bytes=0-0", 206, (0, 1), "bytes 0-0/1024"),
    ("bytes=100-199", 206, (100, 200), "bytes 100-199/1024"),
    ("bytes=1023-1023", 206, (1023, 1024), "bytes 1023-1023/1024"),
    ("bytes=-10", 206, (1014, 1024), "bytes 1014-1023/1024"),
    ("bytes=1000-", 206, (1000, 1024), "bytes 1000-1023/1024"),
    ("bytes=1000-5000", 206, (1000, 1024), "bytes 1000-1023/1024"),
    ("bytes=-5000", 206, (0, 1024), "bytes 0-1023/1024"),
    ("bytes=0-1,5-6", 200, (0, 1024), None),
    ("bytes=5-1", 200, (0, 1024), None),
    ("lines=1-2", 200, (0, 1024), None),
    ("bytes=1024-", 416, None, "bytes */1024"),
    ("bytes=5000-6000", 416, None, "bytes */1024"),
    ("bytes=-0", 416, None, "bytes */1024"),
])
def test_range_table(shared_server, header, status, body_slice, content_range):
    url = shared_server.url
    put(url, "/range/f", RANGE_DATA, T0)
    r = requests.get(url + "/files/range/f", headers={"Range": header}, timeout=5)
    assert r.status_code == status
    assert r.headers.get("Content-Range") == content_range
    if body_slice is not None:
        assert r.content == RANGE_DATA[body_slice[0]:body_slice[1]]
        assert int(r.headers["Content-Length"]) == body_slice[1] - body_slice[0]
    else:
        assert r.headers["X-Exception"]
    # HEAD ignores Range and describes the whole body.
    r = requests.head(url + "/files/range/f", headers={"Range": header}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Length"] == "1024"


def test_large_file_streams(shared_server):
    data = os.urandom(1 << 20) * 8  # 8 MiB
    r = put(shared_server.url, "/big/f", data, T0)
    assert r.status_code == 200
    r = requests.get(shared_server.url + "/files/big/f", stream=True, timeout=30)
    got = hashlib.sha256()
    for chunk in r.iter_content(1 << 16):
        got.update(chunk)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()


def test_read_only_and_fallback(tmp_path, shared_server):
    put(shared_server.url, "/old/only-there", b"legacy", T0)
    ro = start_server(tmp_path, "ro", extra=("--read-only", "--fallback-url", shared_server.url))
    try:
        r = put(ro.url, "/x", b"x", T0)
        assert r.status_code == 403 and r.headers["X-Exception"]
        r = requests.delete(ro.url + "/files/x", params={"last_modified": date(T0)}, timeout=5)
        assert r.status_code == 403
        # migration mode streams the old server's answer through (no 307 redirect)
        r = requests.get(ro.url + "/files/old/only-there", allow_redirects=False, timeout=5)
        assert r.status_code == 200 and r.content == b"legacy" and r.headers["X-Fallback"] == "1"
    finally:
        ro.stop()


def test_usage_errors(tmp_path):
    import subprocess

    from tests.support.procs import script
    env = {k: v for k, v in os.environ.items() if k != "FILETRACKER_DIR"}
    p = subprocess.run([script("filetracker-server")], env=env, capture_output=True, timeout=20)
    assert p.returncode == 2 and b"--dir" in p.stderr
    p = subprocess.run([script("filetracker-server"), "-d", str(tmp_path), "--workers", "0"],
                       env=env, capture_output=True, timeout=20)
    assert p.returncode == 2


def test_sigterm_clean_shutdown(server):
    assert put(server.url, "/t", b"x", T0).status_code == 200
    server.service.signal(15)
    assert server.service.proc.wait(timeout=10) == 0


def test_workers_share_one_store(tmp_path):
    """--workers 2: two processes on one socket and one store, stopped together by SIGTERM."""
    import concurrent.futures

    srv = start_server(tmp_path, "multi", extra=("--workers", "2"))
    try:
        with open("/proc/%d/task/%d/children" % (srv.service.pid, srv.service.pid)) as f:
            assert len(f.read().split()) == 2
        def roundtrip(i):
            data = b"w%d" % i * 1000
            assert put(srv.url, "/w/%d" % (i % 10), data, T0 + i).status_code == 200
            return i

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(roundtrip, range(60)))
        for k in range(10):
            newest = max(i for i in range(60) if i % 10 == k)
            r = requests.get(srv.url + "/files/w/%d" % k, timeout=5)
            assert r.content == b"w%d" % newest * 1000 and version_of(r) == T0 + newest
        srv.service.signal(15)
        assert srv.service.proc.wait(timeout=15) == 0
    finally:
        srv.stop()
    from filetracker.storage import ObjectStore
    with ObjectStore(srv.dir) as store:
        assert store.verify().ok
        assert store.collect_garbage() == (0, 0)  # replaced blobs were unlinked
