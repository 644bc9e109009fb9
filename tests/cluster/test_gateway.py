"""The gateway speaks the public protocol over a 3-node cluster (real processes)."""

import gzip
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.cluster.test_e2e_support import (
    BASE_VERSION,
    TestCluster,
    http_date,
    sha256,
    version_of,
    wait_until,
)

V = BASE_VERSION


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = TestCluster(tmp_path_factory.mktemp("gw3"), nodes=3, gateway_args=["--timeout", "2"]).start()
    yield c
    c.stop()


def put(gw, name, data, version, **headers):
    return requests.put(gw + "/files" + name, params={"last_modified": http_date(version)}, data=data,
                        headers=headers, timeout=30)


def test_version(cluster):
    for path in ("/version/", "/version"):
        r = requests.get(cluster.gw + path, timeout=5)
        assert r.status_code == 200 and r.json() == {"protocol_versions": [2]}


def test_put_get_head_range(cluster):
    data = os.urandom(100_000)
    r = put(cluster.gw, "/t/basic.bin", data, V)
    assert r.status_code == 200, r.headers
    assert version_of(r) == V
    r = requests.get(cluster.gw + "/files/t/basic.bin", timeout=10)
    assert r.status_code == 200 and r.content == data and version_of(r) == V
    assert r.headers["Content-Length"] == str(len(data)) and "Content-Encoding" not in r.headers
    r = requests.head(cluster.gw + "/files/t/basic.bin", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data))
    r = requests.get(cluster.gw + "/files/t/basic.bin", headers={"Range": "bytes=10-19"}, timeout=10)
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == "bytes 10-19/%d" % len(data)
    r = requests.get(cluster.gw + "/files/t/basic.bin", headers={"Range": "bytes=-5"}, timeout=10)
    assert r.status_code == 206 and r.content == data[-5:]
    r = requests.get(cluster.gw + "/files/t/basic.bin", headers={"Range": "bytes=200000-"}, timeout=10)
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */%d" % len(data)
    assert r.headers.get("X-Exception")


def test_every_owner_holds_the_put(cluster):
    data = b"replicated"
    assert put(cluster.gw, "/t/rep.txt", data, V).status_code == 200
    expected = (V, sha256(data))

    def held():
        recs = [cluster.node_record(u, "/t/rep.txt") for u in cluster.node_urls]
        return all(r is not None and (r.version, r.sha256) == expected for r in recs)
    assert wait_until(held, 10)


def test_empty_file_and_gzip_upload(cluster):
    assert put(cluster.gw, "/t/empty", b"", V).status_code == 200
    r = requests.get(cluster.gw + "/files/t/empty", timeout=10)
    assert r.status_code == 200 and r.content == b""
    data = b"compress me " * 5000
    r = put(cluster.gw, "/t/gz.txt", gzip.compress(data), V, **{
        "Content-Encoding": "gzip", "Logical-Size": str(len(data)), "SHA256-Checksum": sha256(data)})
    assert r.status_code == 200, r.headers
    r = requests.get(cluster.gw + "/files/t/gz.txt", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert r.content == data


def test_stale_put_reports_newer_version(cluster):
    assert put(cluster.gw, "/t/stale", b"new", V + 10).status_code == 200
    r = put(cluster.gw, "/t/stale", b"old", V + 5)
    assert r.status_code == 200 and version_of(r) == V + 10
    assert requests.get(cluster.gw + "/files/t/stale", timeout=10).content == b"new"


def test_delete_then_older_put_conflicts(cluster):
    assert put(cluster.gw, "/t/del", b"x", V).status_code == 200
    r = requests.delete(cluster.gw + "/files/t/del", params={"last_modified": http_date(V + 1)}, timeout=10)
    assert r.status_code == 200
    assert requests.get(cluster.gw + "/files/t/del", timeout=10).status_code == 404
    r = requests.delete(cluster.gw + "/files/t/del", params={"last_modified": http_date(V + 2)}, timeout=10)
    assert r.status_code == 404 and r.headers.get("X-Exception")
    r = put(cluster.gw, "/t/del", b"late", V)
    assert r.status_code == 409 and r.headers.get("X-Exception")
    assert requests.get(cluster.gw + "/files/t/del", timeout=10).status_code == 404
    assert put(cluster.gw, "/t/del", b"again", V + 3).status_code == 200
    assert requests.get(cluster.gw + "/files/t/del", timeout=10).content == b"again"


def test_checksum_mismatch_is_refused(cluster):
    r = put(cluster.gw, "/t/badsum", b"data", V, **{"SHA256-Checksum": sha256(b"other")})
    assert r.status_code == 400 and r.headers.get("X-Exception")
    assert requests.get(cluster.gw + "/files/t/badsum", timeout=10).status_code == 404


@pytest.mark.parametrize("method,path,params", [
    ("PUT", "/files/t/x", {}),                                   # no last_modified
    ("PUT", "/files/t/x", {"last_modified": "not a date"}),
    ("PUT", "/files/t/%2E%2E/x", {"last_modified": http_date(V)}),
    ("PUT", "/files/rel", {"last_modified": "garbage"}),
    ("DELETE", "/files/t/x", {}),
    ("GET", "/files/t/a%00b", {}),
    ("GET", "/list/a/%2E%2E/b", {}),
])
def test_bad_input_is_400(cluster, method, path, params):
    r = requests.request(method, cluster.gw + path, params=params, data=b"body" if method == "PUT" else None,
                         timeout=10)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers.get("X-Exception") and "Traceback" not in r.text


def test_missing_and_unknown(cluster):
    r = requests.get(cluster.gw + "/files/t/never", timeout=10)
    assert r.status_code == 404 and r.headers.get("X-Exception")
    assert requests.head(cluster.gw + "/files/t/never", timeout=10).status_code == 404
    r = requests.get(cluster.gw + "/nothing/here", timeout=10)
    assert r.status_code == 404 and r.headers.get("X-Exception")


def test_list_merges_and_omits_tombstones(cluster):
    for n in ("a", "b", "sub/c"):
        assert put(cluster.gw, "/lst/" + n, n.encode(), V).status_code == 200
    assert put(cluster.gw, "/lst/later", b"z", V + 100).status_code == 200
    assert requests.delete(cluster.gw + "/files/lst/b", params={"last_modified": http_date(V + 1)},
                           timeout=10).status_code == 200
    r = requests.get(cluster.gw + "/list/lst", timeout=10)
    assert r.status_code == 200 and r.text == "a\nlater\nsub/c\n"
    r = requests.get(cluster.gw + "/list/lst/", params={"last_modified": http_date(V + 50)}, timeout=10)
    assert r.text == "a\nsub/c\n"
    assert requests.get(cluster.gw + "/list/empty-folder", timeout=10).text == ""


def test_list_bound_is_applied_after_the_merge(cluster_factory):
    """A replica that missed a newer version or a delete must not put the old record back into
    a listing with ``last_modified``: nodes bounded their records before the gateway merged them,
    so only the lagging replica's old records reached the merge (found by a model-based check)."""
    c = cluster_factory(nodes=3, gateway=True)   # no background passes: node 0 stays behind
    for name in ("/lb/deleted", "/lb/updated", "/lb/kept"):
        assert put(c.gateway_url, name, b"one", V).status_code == 200
    assert wait_until(lambda: all(c.record(i, "/lb/kept") is not None for i in range(3)), timeout=30)
    for i in (1, 2):   # the newer writes reach nodes 1 and 2 only
        assert c.delete(i, "/lb/deleted", V + 100).status_code == 200
        assert c.put(i, "/lb/updated", b"two", V + 100).status_code == 200
    bound = {"last_modified": http_date(V + 50)}
    r = requests.get(c.gateway_url + "/list/lb/", params=bound, timeout=10)
    assert (r.status_code, r.text) == (200, "kept\n")
    r = requests.get(c.gateway_url + "/list/lb/", params=dict(bound, details="1"), timeout=10)
    assert r.text == "kept\t%d\t3\n" % V
    assert requests.get(c.gateway_url + "/list/lb/", timeout=10).text == "kept\nupdated\n"


def test_read_repair(tmp_path):
    """A replica that missed a write gets it after a read (R=3 so every owner is consulted)."""
    c = TestCluster(tmp_path, nodes=3, gateway_args=["--read-quorum", "3"]).start()
    try:
        data = b"v1"
        assert put(c.gw, "/rr/f", data, V).status_code == 200
        # A newer version stored directly on one node only (as if the others missed it).
        newer = b"v2 newer"
        r = requests.put(c.node_urls[0] + "/_cluster/files/rr/f", params={"version": V + 1}, data=newer,
                         headers=c.headers, timeout=10)
        assert r.status_code == 200
        r = requests.get(c.gw + "/files/rr/f", timeout=10)
        assert r.content == newer and version_of(r) == V + 1

        def repaired():
            recs = [c.node_record(u, "/rr/f") for u in c.node_urls]
            return all(x is not None and x.version == V + 1 and x.sha256 == sha256(newer) for x in recs)
        assert wait_until(repaired, 10), c.logs()
        for u in c.node_urls:
            assert requests.get(u + "/_cluster/files/rr/f", headers=c.headers, timeout=10).content == newer
    finally:
        c.stop()


def test_concurrent_reads_repair_a_stale_replica_once(tmp_path):
    """Reads of a hot file that all see one stale replica start one repair of it, not one each
    (each used to stream its own copy of the blob to that node)."""
    # no background passes: anti-entropy must not repair the replica before the reads do
    c = TestCluster(tmp_path, nodes=3, gateway_args=["--read-quorum", "3", "--log-level", "INFO"],
                    node_args=["--no-background"]).start()
    try:
        assert put(c.gw, "/rr/hot", b"v1", V).status_code == 200
        newer = os.urandom(16 << 20)
        r = requests.put(c.node_urls[0] + "/_cluster/files/rr/hot", params={"version": V + 1}, data=newer,
                         headers=c.headers, timeout=30)
        assert r.status_code == 200

        def read(_):
            r = requests.get(c.gw + "/files/rr/hot", timeout=60)
            return r.status_code, version_of(r), r.content == newer

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(read, range(8))) == {(200, V + 1, True)}

        def repaired():
            return all(c.node_record(u, "/rr/hot").sha256 == sha256(newer) for u in c.node_urls)
        assert wait_until(repaired, 30), c.logs()

        def streamed(url):
            return open(c.gateways[0].log_path).read().count("read repair: /rr/hot@%d streamed to %s" % (V + 1, url))
        for url in c.node_urls[1:]:
            assert wait_until(lambda url=url: streamed(url) >= 1, 10), c.logs()
        time.sleep(2)  # a second copy, were there one, would have been logged by now (it was 8 of 8)
        assert [streamed(url) for url in c.node_urls[1:]] == [1, 1], c.logs()
    finally:
        c.stop()


def test_handoff_when_an_owner_is_down(tmp_path):
    """4 nodes, N=3: with one owner down the write goes to the handoff node, still answered 200."""
    c = TestCluster(tmp_path, nodes=4, gateway_args=["--timeout", "2"]).start()
    try:
        name = "/ho/file"
        owners = [n.url for n in c.ring.owners(name)]
        spare = [u for u in c.node_urls if u not in owners][0]
        victim = owners[0]
        c.nodes[c.node_urls.index(victim)].stop()
        r = put(c.gw, name, b"handed off", V)
        assert r.status_code == 200, r.headers
        assert requests.get(c.gw + "/files" + name, timeout=10).content == b"handed off"
        # W=2 may be met by one owner and the spare: each gets its copy, the third maybe later
        assert wait_until(lambda: c.node_record(spare, name) is not None, 10)
        assert wait_until(lambda: all(c.node_record(u, name) is not None for u in owners[1:]), 10)
        for u in owners[1:]:
            assert c.node_record(u, name).version == V
    finally:
        c.stop()
