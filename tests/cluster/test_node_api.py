"""A node's internal API and public protocol, against real node processes."""

import gzip
import os
import subprocess

import msgpack
import pytest
import requests

from cluster.peers import quote_name
from cluster.ring import Node, Ring, partition_of
from filetracker.records import Record
from tests.cluster.conftest import NodeCluster, sha256
from tests.support.procs import script

V = 1795550400


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    cl = NodeCluster(tmp_path_factory.mktemp("nodeapi"), nodes=2, replicas=2).start()
    yield cl
    cl.stop()


def test_put_head_get_range_delete(c):
    data = os.urandom(300_000)
    r = c.put(0, "/api/a.bin", data, V, **{"SHA256-Checksum": sha256(data)})
    assert r.status_code == 200, r.headers
    assert (r.headers["X-Version"], r.headers["X-Sha256"], r.headers["X-Size"], r.headers["X-Deleted"],
            r.headers["X-Applied"]) == (str(V), sha256(data), str(len(data)), "0", "1")
    assert r.headers["X-Ring-Epoch"] == "1"
    rec = c.record(0, "/api/a.bin")
    assert (rec.version, rec.sha256, rec.size, rec.deleted) == (V, sha256(data), len(data), False)
    assert c.content(0, "/api/a.bin") == data
    g = requests.get(c.urls[0] + "/_cluster/files/api/a.bin", headers=c.headers(Range="bytes=100-199"), timeout=10)
    assert g.status_code == 206 and g.content == data[100:200] and g.headers["X-Version"] == str(V)
    # an older write loses and says so
    r = c.put(0, "/api/a.bin", b"old", V - 1)
    assert r.status_code == 200 and r.headers["X-Applied"] == "0" and r.headers["X-Version"] == str(V)
    # equal version: the larger sha256 wins on every node alike
    other = b"other content"
    r = c.put(0, "/api/a.bin", other, V)
    assert r.headers["X-Applied"] == ("1" if sha256(other) > sha256(data) else "0")
    # delete leaves a tombstone: 404 with the record header set
    r = c.delete(0, "/api/a.bin", V + 1)
    assert r.status_code == 200 and r.headers["X-Deleted"] == "1" and r.headers["X-Version"] == str(V + 1)
    g = requests.get(c.urls[0] + "/_cluster/files/api/a.bin", headers=c.headers(), timeout=10)
    assert g.status_code == 404 and g.headers["X-Deleted"] == "1" and g.headers.get("X-Exception")
    h = requests.head(c.urls[0] + "/_cluster/files/api/a.bin", headers=c.headers(), timeout=10)
    assert h.status_code == 200 and h.headers["X-Deleted"] == "1"
    # a write older than the tombstone does not resurrect it
    assert c.put(0, "/api/a.bin", data, V).headers["X-Applied"] == "0"
    # no record at all: 404 without X-Version
    h = requests.head(c.urls[0] + "/_cluster/files/api/none", headers=c.headers(), timeout=10)
    assert h.status_code == 404 and "X-Version" not in h.headers and h.headers["X-Ring-Epoch"] == "1"


def test_gzip_checksum_and_bad_input(c):
    data = b"gzip me " * 10_000
    r = c.put(0, "/api/gz", gzip.compress(data), V, **{"Content-Encoding": "gzip", "SHA256-Checksum": sha256(data)})
    assert r.status_code == 200 and r.headers["X-Size"] == str(len(data))
    assert c.content(0, "/api/gz") == data
    # wrong checksum: 400 and nothing stored
    r = c.put(0, "/api/bad", b"abc", V, **{"SHA256-Checksum": "0" * 64})
    assert r.status_code == 400 and r.headers.get("X-Exception")
    assert c.record(0, "/api/bad") is None
    r = c.put(0, "/api/badgz", b"not gzip", V, **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and c.record(0, "/api/badgz") is None
    for params in ({}, {"version": "abc"}, {"version": "-1"}):
        r = requests.put(c.urls[0] + "/_cluster/files/api/x", params=params, data=b"x", headers=c.headers(),
                         timeout=10)
        assert r.status_code == 400 and r.headers.get("X-Exception"), params
    for path in ("/_cluster/files/a/%2E%2E/b", "/_cluster/files/a@5", "/_cluster/blobs/xyz", "/_cluster/partition/99999"):
        r = requests.put(c.urls[0] + path, params={"version": V}, data=b"x", headers=c.headers(), timeout=10) \
            if "files" in path else requests.get(c.urls[0] + path, headers=c.headers(), timeout=10)
        assert r.status_code == 400 and r.headers.get("X-Exception"), path
    r = requests.post(c.urls[0] + "/_cluster/records", data=b"\xc1garbage", headers=c.headers(), timeout=10)
    assert r.status_code == 400
    assert os.listdir(os.path.join(c.dirs[0], "tmp")) == []


def test_secret_required(c):
    url = c.urls[0]
    for method, path, kw in [
        ("PUT", "/_cluster/files/sec/x?version=%d" % V, {"data": b"x"}),
        ("DELETE", "/_cluster/files/api/gz?version=%d" % (V + 5), {}),
        ("GET", "/_cluster/ring", {}),
        ("PUT", "/_cluster/ring", {"data": msgpack.packb(c.ring.to_dict())}),
        ("GET", "/_cluster/digests", {}),
        ("POST", "/_cluster/records", {"data": msgpack.packb([])}),
        ("POST", "/_cluster/partitions", {"data": msgpack.packb([0])}),
        ("POST", "/_cluster/run/sync", {}),
    ]:
        for headers in ({}, {"X-Cluster-Secret": "wrong"}):
            r = requests.request(method, url + path, headers=headers, timeout=10, **kw)
            assert r.status_code == 403 and r.headers.get("X-Exception"), (method, path)
    assert c.record(0, "/sec/x") is None
    assert c.record(0, "/api/gz").deleted is False
    # the public protocol needs no secret; reads work, writes are refused
    assert requests.get(url + "/files/api/gz", timeout=10).content == b"gzip me " * 10_000
    r = requests.put(url + "/files/pub/x", params={"last_modified": "Tue, 24 Nov 2026 20:00:00 -0000"},
                     data=b"x", timeout=10)
    assert r.status_code == 403 and "public writes" in r.headers["X-Exception"]
    assert c.record(0, "/pub/x") is None


def test_records_digests_partition_blobs_list(c):
    data = b"replicate me"
    assert c.put(0, "/rec/one", data, V).status_code == 200
    assert c.delete(0, "/rec/gone", V).status_code == 200
    rec = c.record(0, "/rec/one")
    p = partition_of("/rec/one", 10)
    digests_before = c.client.digests(c.urls[1])
    # node 1 lacks the blob: the data record is reported missing, the tombstone applied
    missing = c.client.post_records(c.urls[1], [rec, c.record(0, "/rec/gone")])
    assert missing == [sha256(data)]
    assert c.record(1, "/rec/gone").deleted and c.record(1, "/rec/one") is None
    # the blob by content address, then the push completes
    b = requests.get(c.urls[0] + "/_cluster/blobs/" + sha256(data), headers=c.headers(), timeout=10)
    assert b.status_code == 200 and b.content == data
    assert requests.get(c.urls[0] + "/_cluster/blobs/" + "0" * 64, headers=c.headers(), timeout=10).status_code == 404
    with open(os.path.join(c.dirs[0], "blobs", sha256(data)[:2], sha256(data)), "rb") as f:
        winner, applied = c.client.put_file(c.urls[1], rec, f)
    assert applied and winner == rec
    assert c.client.post_records(c.urls[1], [rec]) == []
    # digests and partition lists agree between the two nodes for that partition
    d0, d1 = c.client.digests(c.urls[0]), c.client.digests(c.urls[1])
    assert d0[p] == d1[p] and d1 != digests_before
    assert rec in c.client.partition_records(c.urls[1], p)
    lst = c.client.list_folder(c.urls[0], "/rec")
    assert [x[0] for x in lst] == ["/rec/gone", "/rec/one"] and lst[0][4] is True
    assert c.client.list_folder(c.urls[0], "/rec", max_version=V - 1) == []


def test_records_with_inline_content_and_many_partitions(c):
    """``POST /_cluster/records`` stores small blobs sent inside the record list (checked against
    the record), and ``POST /_cluster/partitions`` lists several partitions in one answer."""
    good, bad = b"inline content", b"not what the record says"
    rec = Record("/inl/good", V, sha256(good), len(good))
    liar = Record("/inl/liar", V, sha256(b"something else"), len(bad))
    lacking = Record("/inl/lacking", V, sha256(b"never sent"), 10)
    missing, understood = c.client.post_records_inline(
        c.urls[1], [rec, liar, lacking], {rec.sha256: good, liar.sha256: bad})
    assert understood and sorted(missing) == sorted([liar.sha256, lacking.sha256])
    assert c.record(1, "/inl/good") == rec and c.content(1, "/inl/good") == good
    assert c.record(1, "/inl/liar") is None and c.record(1, "/inl/lacking") is None
    assert os.listdir(os.path.join(c.dirs[1], "tmp")) == []
    # offered again: merged without its content (the blob is there), nothing missing
    assert c.client.post_records_inline(c.urls[1], [rec], {}) == ([], True)
    # content larger than the inline limit, or too much of it: refused whole, nothing stored
    for items, status in [
            ([dict(Record("/inl/big", V, "0" * 64, 70_000).to_dict(), data=b"x" * 70_000)], 400),
            ([dict(Record("/inl/s%d" % i, V, "0" * 64, 60_000).to_dict(), data=b"x" * 60_000)
              for i in range(80)], 413),
            ([dict(rec.to_dict(), data="text, not bytes")], 400),
            ([dict(rec.to_dict(), version=2 ** 63)], 400),   # beyond SQLite's integers
            ([dict(rec.to_dict(), size=-1)], 400),
            ([rec.to_dict()] * 10_001, 400)]:
        r = requests.post(c.urls[1] + "/_cluster/records", data=msgpack.packb(items), headers=c.headers(), timeout=30)
        assert r.status_code == status and r.headers.get("X-Exception"), r.status_code
    assert c.record(1, "/inl/big") is None and c.record(1, "/inl/s0") is None
    # a record after year 9999 (no HTTP date for it) is left out alone: the rest of the batch merges
    far = Record("/inl/far", 253402300800, sha256(b"far"), 3)
    near = Record("/inl/near", V, sha256(b"near"), 4)
    r = requests.post(c.urls[1] + "/_cluster/records", headers=c.headers(), timeout=30,
                      data=msgpack.packb([dict(far.to_dict(), data=b"far"), dict(near.to_dict(), data=b"near")]))
    assert r.status_code == 200 and msgpack.unpackb(r.content)["applied"] == 1, r.content
    assert c.record(1, "/inl/far") is None and c.record(1, "/inl/near") == near
    # the record lists of several partitions at once (an empty one included)
    p = partition_of("/inl/good", 10)
    empty = next(q for q in range(1024) if q != p and not c.client.partition_records(c.urls[1], q))
    listed = c.client.partitions_records(c.urls[1], [p, empty])
    assert listed == {p: c.client.partition_records(c.urls[1], p), empty: []} and rec in listed[p]
    for body in ([1024], [-1], ["1"], list(range(65)), {"p": 1}, [True]):
        r = requests.post(c.urls[1] + "/_cluster/partitions", data=msgpack.packb(body), headers=c.headers(),
                          timeout=10)
        assert r.status_code == 400 and "partition numbers" in r.headers["X-Exception"], body


def test_ring_get_put_and_status(c):
    ring = c.client.get_ring(c.urls[0])
    assert ring == c.ring and ring.epoch == 1
    assert c.client.put_ring(c.urls[0], ring) is True          # same epoch, identical: 200
    other = Ring([Node("http://x:1", "http://x:1")], epoch=1)
    assert c.client.put_ring(c.urls[0], other) is False        # same epoch, different: 409
    older = Ring(c.ring.nodes, epoch=0)
    assert c.client.put_ring(c.urls[0], older) is False
    st = c.status(0)
    assert st["id"] == c.urls[0] and st["epoch"] == 1 and st["partitions_owned"] == 1024
    assert st["files"] >= 1 and st["free_bytes"] > 0 and "sync" in st["tasks"]
    r = requests.put(c.urls[0] + "/_cluster/ring", data=b"\x93\x01", headers=c.headers(), timeout=10)
    assert r.status_code == 400


def test_public_writes_flag_and_ring_persisted(cluster_factory):
    cl = cluster_factory(nodes=1, replicas=1, secret=None, node_args=["--allow-public-writes"])
    url = cl.urls[0]
    r = requests.put(url + "/files/pub/x", params={"last_modified": "Tue, 24 Nov 2026 20:00:00 -0000"},
                     data=b"hello", timeout=10)
    assert r.status_code == 200 and r.headers["X-Ring-Epoch"] == "1"
    assert requests.get(url + "/files/pub/x", timeout=10).content == b"hello"
    assert requests.get(url + "/_cluster/ring", timeout=10).status_code == 200   # no secret configured
    new = cl.ring.with_changes(add=[Node("http://127.0.0.1:1", "http://127.0.0.1:1")])
    assert cl.client.put_ring(url, new) is True
    cl.restart(0)
    assert cl.client.get_ring(url) == new
    assert requests.get(url + "/files/pub/x", timeout=10).headers["X-Ring-Epoch"] == "2"


def test_usage_errors_exit_2(tmp_path):
    node = script("filetracker-node")
    for argv in ([], ["--dir", str(tmp_path)], ["--dir", str(tmp_path), "--port", "0"],
                 ["--dir", str(tmp_path), "--port", "9", "--peers", "notaurl"],
                 ["--dir", str(tmp_path), "--port", "9", "--replicas", "0"],
                 ["--dir", str(tmp_path), "--port", "9", "--cluster-secret-file", str(tmp_path / "none")]):
        p = subprocess.run([node] + argv, capture_output=True, timeout=30)
        assert p.returncode == 2, (argv, p.stderr)
        assert b"Traceback" not in p.stderr and p.stderr.strip()


def test_quote_name_roundtrip(c):
    name = "/sp ace/\u017c\u00f3\u0142w%41"
    assert c.put(0, name, b"u", V).status_code == 200
    assert c.record(0, name).version == V
    assert requests.get(c.urls[0] + "/_cluster/files" + quote_name(name), headers=c.headers(),
                        timeout=10).content == b"u"


def test_sigterm_clean_shutdown(cluster_factory):
    cl = cluster_factory(nodes=1, replicas=1, sync_interval=0.2)
    svc = cl.services[0]
    svc.signal(15)
    assert svc.proc.wait(timeout=10) == 0
    assert "shutting down" in svc.log_tail()
