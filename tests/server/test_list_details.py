"""The listing with details (``GET /list/<folder>?details=1``), an extension of
the protocol the FUSE mount uses: exact lines from our server and from the
gateway over 3 nodes, and the plain listing unchanged byte for byte."""

import gzip
import hashlib
import http.client
import os
import urllib.parse

import pytest
import requests

from filetracker.httpdate import format_version, parse_version
from filetracker.records import Record
from filetracker.storage.store import ObjectStore
from tests.server.conftest import start_server

BASE = 1_700_000_000
SMALL = b"hello"                      # 5 bytes, sent plain
BIG = b"compressible line\n" * 500    # 9000 bytes, sent gzip-compressed
NESTED = b"abc"


def put(url, name, data, version, compress=False):
    headers = {"SHA256-Checksum": hashlib.sha256(data).hexdigest()}
    body = data
    if compress:
        body = gzip.compress(data)
        headers.update({"Content-Encoding": "gzip", "Logical-Size": str(len(data))})
    r = requests.put(url + "/files" + name, params={"last_modified": format_version(version)},
                     data=body, headers=headers, timeout=10)
    assert r.status_code == 200, (r.status_code, r.headers.get("X-Exception"))


def delete(url, name, version):
    r = requests.delete(url + "/files" + name, params={"last_modified": format_version(version)}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.headers.get("X-Exception"))


def listing(url, folder, **params):
    r = requests.get(url + "/list" + folder, params=params, timeout=10)
    assert r.status_code == 200, (r.status_code, r.headers.get("X-Exception"))
    return r


@pytest.fixture(scope="module", params=["server", "gateway"])
def store_url(request, tmp_path_factory):
    """A filled store: our server, then the gateway over 3 nodes."""
    tmp = tmp_path_factory.mktemp("details-" + request.param)
    if request.param == "server":
        svc = start_server(tmp)
        url = svc.url
    else:
        from tests.cluster.test_e2e_support import TestCluster
        svc = TestCluster(os.path.join(str(tmp)), nodes=3, replicas=3).start()
        url = svc.gw
    try:
        put(url, "/d/a.txt", SMALL, BASE + 10)
        put(url, "/d/b.bin", BIG, BASE + 20, compress=True)
        put(url, "/d/sub/c.txt", NESTED, BASE + 30)
        put(url, "/d/gone.txt", SMALL, BASE + 10)
        delete(url, "/d/gone.txt", BASE + 15)
        put(url, "/d/later.txt", SMALL, BASE + 100)
        put(url, "/other/x.txt", SMALL, BASE + 10)
        yield url
    finally:
        svc.stop()


def test_details_lines_exact(store_url):
    r = listing(store_url, "/d", details="1")
    assert r.headers["X-List-Format"] == "details"
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text == ("a.txt\t%d\t5\n" % (BASE + 10)
                      + "b.bin\t%d\t9000\n" % (BASE + 20)      # the logical size, not the gzip size
                      + "later.txt\t%d\t5\n" % (BASE + 100)
                      + "sub/c.txt\t%d\t3\n" % (BASE + 30))    # tombstone gone.txt omitted


def test_details_respect_the_version_bound(store_url):
    r = listing(store_url, "/d/", details="1", last_modified=format_version(BASE + 50))
    assert r.headers["X-List-Format"] == "details"
    assert r.text == ("a.txt\t%d\t5\n" % (BASE + 10)
                      + "b.bin\t%d\t9000\n" % (BASE + 20)
                      + "sub/c.txt\t%d\t3\n" % (BASE + 30))


def test_details_of_a_subfolder_and_an_empty_folder(store_url):
    assert listing(store_url, "/d/sub", details="1").text == "c.txt\t%d\t3\n" % (BASE + 30)
    r = listing(store_url, "/nothing/here", details="1")
    assert r.headers["X-List-Format"] == "details"
    assert r.content == b""


def test_details_agree_with_head(store_url):
    """Each line says what a HEAD of the file says (version and logical size)."""
    for line in listing(store_url, "/d", details="1").text.splitlines():
        rel, version, size = line.split("\t")
        h = requests.head(store_url + "/files/d/" + rel, timeout=10)
        assert h.status_code == 200
        assert parse_version(h.headers["Last-Modified"]) == int(version)
        if h.headers.get("Content-Encoding", "").lower() == "gzip":
            assert int(h.headers["Logical-Size"]) == int(size)
        else:
            assert int(h.headers["Content-Length"]) == int(size)


@pytest.mark.parametrize("params", [{}, {"details": "0"}, {"details": ""}, {"details": "no"}])
def test_plain_listing_unchanged(store_url, params):
    """Without details=1 the answer is the 2.x listing, byte for byte, without the header."""
    r = listing(store_url, "/d", **params)
    assert "X-List-Format" not in r.headers
    assert r.content == b"a.txt\nb.bin\nlater.txt\nsub/c.txt\n"
    r = listing(store_url, "/d", last_modified=format_version(BASE + 50), **params)
    assert r.content == b"a.txt\nb.bin\nsub/c.txt\n"
    assert listing(store_url, "/nothing", **params).content == b""


def test_details_bad_folder_still_400(store_url):
    # http.client sends the path as written (requests would resolve the "..").
    host, port = urllib.parse.urlsplit(store_url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/list/d/../etc?details=1")
        r = conn.getresponse()
        r.read()
        assert r.status == 400
        assert r.getheader("X-Exception")
        assert r.getheader("X-List-Format") is None
    finally:
        conn.close()


def test_server_details_span_several_batches(tmp_path):
    """More lines than one executor batch (1000): every file once, in name order."""

    data = tmp_path / "server"
    with ObjectStore(str(data)) as store:
        up = store.begin_upload()
        up.write(b"x" * 7)
        store.commit_upload(up, "/many/f0000", BASE)
        rec = store.get_record("/many/f0000")
        for i in range(1, 1200):
            store.put_record(Record(name="/many/f%04d" % i, version=BASE + i, sha256=rec.sha256, size=7))
    svc = start_server(tmp_path)
    try:
        r = listing(svc.url, "/many", details="1")
        lines = r.text.splitlines()
        assert len(lines) == 1200
        assert lines[0] == "f0000\t%d\t7" % BASE
        assert lines[-1] == "f1199\t%d\t7" % (BASE + 1199)
        assert listing(svc.url, "/many").text.splitlines() == [line.split("\t")[0] for line in lines]
    finally:
        svc.stop()


def test_empty_details_listing_says_what_the_name_is(store_url):
    """X-List-Self on an empty listing with details: one request tells file, folder or nothing."""
    def self_of(folder, **params):
        r = listing(store_url, folder, details="1", **params)
        assert r.content == b""
        return r.headers.get("X-List-Self")

    assert self_of("/d/a.txt") == "file %d 5" % (BASE + 10)
    assert self_of("/d/b.bin") == "file %d 9000" % (BASE + 20)   # logical size
    assert self_of("/d/gone.txt") == "none"                      # a tombstone is no file
    assert self_of("/d/later.txt", last_modified=format_version(BASE + 50)) == "none"
    assert self_of("/nothing/here") == "none"
    # A non-empty listing is a folder: no header; and never without details.
    assert "X-List-Self" not in listing(store_url, "/d", details="1").headers
    r = listing(store_url, "/d/a.txt")
    assert r.content == b"" and "X-List-Self" not in r.headers
