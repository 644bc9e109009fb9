"""Small PUTs written in batches (cluster/gateway/smallput.py, cluster/node/writebatch.py).

Against real nodes: concurrent small files share ``POST /_cluster/store``
requests, each file gets its own answer (stored, lost to a newer version, a
checksum mismatch), a node without the endpoint (an older version) gets plain
PUTs with the same answers; and through a real gateway the answers of a
small PUT are those of the streamed path (``--no-batch-writes``), header by
header, for plain, gzip, corrupt and oversized bodies.
"""

import asyncio
import gzip
import hashlib
import os

import msgpack
import pytest
import requests

from cluster.gateway.config import GatewayConfig
from cluster.gateway.nodes import NodeClient
from cluster.gateway.smallput import SMALL_PUT_MAX, StoreBatcher
from cluster.peers import INLINE_BATCH_BYTES, INLINE_BATCH_COUNT, INLINE_BLOB_MAX
from filetracker.httpdate import MAX_VERSION
from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date

V = 1_700_000_000


class _Quiet:
    def node_failed(self, url, reason=""):
        pass

    def epoch_seen(self, epoch, url):
        pass


class Counting:
    """A node client counting requests by path; with ``old`` the node has no ``/_cluster/store``
    (its request gets the real node's 404 for an unknown path)."""

    def __init__(self, client, old=False):
        self._client = client
        self._old = old
        self.paths = []

    def __getattr__(self, attr):
        return getattr(self._client, attr)

    async def request(self, url, method, path, *args, **kwargs):
        self.paths.append(path.split("?")[0])
        if self._old and path == "/_cluster/store":
            path = "/_cluster/no-such-endpoint"
        return await self._client.request(url, method, path, *args, **kwargs)


def _item(name, data, version=V, sha256=None, size=None, hint=None):
    return {"name": name, "version": version, "data": data, "sha256": sha256, "size": size, "hint": hint}


ITEMS = [_item("/wb/f%02d" % i, b"file %d" % i) for i in range(30)] + [
    _item("/wb/sum-ok", b"checked", sha256=hashlib.sha256(b"checked").hexdigest(), size=7),
    _item("/wb/sum-bad", b"checked", sha256="0" * 64),
    _item("/wb/size-bad", b"checked", size=8),
    _item("/wb/hinted", b"for another", hint="node-x"),
    _item("/wb/empty", b""),
]


def _put_all(url, secret, old, items):
    async def run():
        client = Counting(NodeClient(GatewayConfig(nodes=(url,), cluster_secret=secret), _Quiet()), old)
        batcher = StoreBatcher(client)
        try:
            got = await asyncio.gather(*[batcher.put(url, item) for item in items])
        finally:
            client.close()
        return [(a.code, a.record and (a.record.version, a.record.sha256, a.record.size, a.record.deleted))
                for a in got], client.paths

    return asyncio.run(run())


def test_batched_and_single_puts_answer_the_same(cluster_factory):
    new_node = cluster_factory(nodes=1, replicas=1)
    old_node = cluster_factory(nodes=1, replicas=1)
    # a newer version already there: the batch's older one loses (200, the stored winner)
    for c in (new_node, old_node):
        assert c.put(0, "/wb/f00", b"newer", V + 5).ok
    new, new_paths = _put_all(new_node.urls[0], new_node.secret, False, ITEMS)
    old, old_paths = _put_all(old_node.urls[0], old_node.secret, True, ITEMS)
    assert new == old
    assert new[0] == (200, (V + 5, hashlib.sha256(b"newer").hexdigest(), 5, False))
    assert new[1] == (200, (V, hashlib.sha256(b"file 1").hexdigest(), 6, False))
    assert [code for code, _ in new[30:]] == [200, 400, 400, 200, 200]
    # batched: 35 files in a few requests; the old node: one 404, then one PUT per file
    assert set(new_paths) == {"/_cluster/store"} and len(new_paths) <= 3, new_paths
    assert old_paths[0] == "/_cluster/store" and old_paths.count("/_cluster/store") == 1
    assert len(old_paths) == 1 + len(ITEMS)
    # what was stored is what was sent, and nothing of the refused ones
    for c in (new_node, old_node):
        for item in ITEMS[1:]:
            want = None if item["name"] in ("/wb/sum-bad", "/wb/size-bad") else item["data"]
            assert c.content(0, item["name"]) == want, item["name"]
        metrics = requests.get(c.urls[0] + "/metrics", timeout=10).text
        assert "filetracker_node_hints_taken_total 1.0" in metrics  # /wb/hinted


def test_batches_respect_the_count_and_byte_limits(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1)
    big = [_item("/wb/big%d" % i, os.urandom(INLINE_BLOB_MAX)) for i in range(9)]
    many = [_item("/wb/many%d" % i, b"x") for i in range(2 * INLINE_BATCH_COUNT + 1)]
    got, paths = _put_all(c.urls[0], c.secret, False, big + many)
    assert all(code == 200 for code, _ in got)
    # 9 x 64 KiB: at most 4 per request (256 KiB); 129 tiny ones: at least 3 requests
    per_request = INLINE_BATCH_BYTES // INLINE_BLOB_MAX
    assert len(paths) >= -(-9 // per_request) + 2, paths


@pytest.mark.parametrize("body,status,message", [
    (b"\x93", 400, "not valid msgpack"),
    (msgpack.packb({"a": 1}), 400, "msgpack list"),
    (msgpack.packb([_item("/ok", b"x")] * (INLINE_BATCH_COUNT + 1)), 400, "at most %d" % INLINE_BATCH_COUNT),
    (msgpack.packb([_item("/a%d" % i, b"x" * INLINE_BLOB_MAX) for i in range(5)]), 413, "bytes of content"),
])
def test_node_refuses_malformed_batches(cluster_factory, body, status, message):
    c = cluster_factory(nodes=1, replicas=1)
    headers = c.headers(**{"Content-Type": "application/msgpack"})
    r = requests.post(c.urls[0] + "/_cluster/store", data=body, headers=headers, timeout=10)
    assert r.status_code == status, r.text
    assert message in r.headers.get("X-Exception", ""), r.headers
    assert "Traceback" not in r.text


def test_node_answers_malformed_files_alone(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1)
    bad = [_item("relative", b"x"), _item("/a@5", b"x"), _item("/v", b"x", version=2 ** 63),
           _item("/t", "text"), _item("/s", b"x", sha256="ABC"), _item("/z", b"x", size=-3),
           _item("/h", b"x", hint=5), 7]
    body = msgpack.packb([_item("/good/1", b"one")] + bad + [_item("/good/2", b"two")])
    r = requests.post(c.urls[0] + "/_cluster/store", data=body, timeout=10,
                      headers=c.headers(**{"Content-Type": "application/msgpack"}))
    assert r.status_code == 200, r.text
    rows = msgpack.unpackb(r.content, raw=False)
    assert [row[:2] for row in rows] == [["ok", V]] + [["error", 400]] * len(bad) + [["ok", V]]
    assert c.content(0, "/good/1") == b"one" and c.content(0, "/good/2") == b"two"
    assert c.record(0, "/v") is None and c.record(0, "/z") is None


def test_node_wants_the_cluster_secret(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1)
    assert c.secret
    r = requests.post(c.urls[0] + "/_cluster/store", data=msgpack.packb([_item("/a", b"x")]), timeout=10)
    assert r.status_code == 403


# ---- through a gateway: the same answers as the streamed path ----------------------------------

@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    c = TestCluster(tmp_path_factory.mktemp("writebatch"), nodes=3).start()
    try:
        streamed = c.start_gateway(["--no-batch-writes"])
        yield c, c.gw, streamed
    finally:
        c.stop()


PLAIN = b"plain body \x00\xff" * 300
ZIPPED = gzip.compress(PLAIN)
LARGE = os.urandom(SMALL_PUT_MAX // 2) * 3   # compresses below the limit, decodes above it


def _cases():
    digest = hashlib.sha256(PLAIN).hexdigest()
    return {
        "plain": (PLAIN, {}),
        "plain, checksum": (PLAIN, {"SHA256-Checksum": digest.upper()}),
        "empty": (b"", {}),
        "gzip": (ZIPPED, {"Content-Encoding": "gzip", "Logical-Size": str(len(PLAIN)), "SHA256-Checksum": digest}),
        "gzip, decodes above the limit": (gzip.compress(LARGE), {"Content-Encoding": "gzip"}),
        "gzip, corrupt": (ZIPPED[:-9] + b"garbage!!", {"Content-Encoding": "gzip"}),
        "gzip, truncated": (ZIPPED[:20], {"Content-Encoding": "gzip"}),
        "wrong checksum": (PLAIN, {"SHA256-Checksum": "1" * 64}),
        "malformed checksum": (PLAIN, {"SHA256-Checksum": "xyz"}),
        "wrong logical size": (PLAIN, {"Logical-Size": "5"}),
        "malformed logical size": (PLAIN, {"Logical-Size": "-5"}),
        "unknown encoding": (PLAIN, {"Content-Encoding": "br"}),
        "at the limit": (b"L" * SMALL_PUT_MAX, {}),
        "above the limit": (b"M" * (SMALL_PUT_MAX + 1), {}),
    }


def _put(url, name, data, headers, version=BASE_VERSION):
    r = requests.put(url + "/files" + name, data=data, headers=headers, timeout=30,
                     params={"last_modified": http_date(version)})
    return r.status_code, r.headers.get("Last-Modified"), r.headers.get("X-Exception", "").split(": ")[-1], \
        r.text if r.status_code != 200 else ""


@pytest.mark.parametrize("case", list(_cases()))
def test_gateway_small_put_answers_like_the_streamed_path(gateways, case):
    c, batched, streamed = gateways
    data, headers = _cases()[case]
    slug = "".join(ch if ch.isalnum() else "-" for ch in case)
    a = _put(batched, "/wbg/batched/" + slug, data, headers)
    b = _put(streamed, "/wbg/streamed/" + slug, data, headers)
    assert a[0] == b[0], (a, b)
    assert a[1] == b[1]
    # messages name the node that answered: compare what follows the node's URL
    assert a[2].split(" ", 1)[-1] == b[2].split(" ", 1)[-1], (a, b)
    if a[0] == 200:
        for url in (batched, streamed):
            for prefix in ("/wbg/batched/", "/wbg/streamed/"):
                got = requests.get(url + "/files" + prefix + slug, timeout=30)
                assert got.status_code == 200
                want = LARGE if "above the limit" in case and "gzip" in case else \
                    PLAIN if "gzip" in case else data
                assert got.content == want


def test_gateway_small_put_loses_to_newer_version_and_to_delete(gateways):
    c, batched, _ = gateways
    assert _put(batched, "/wbg/lww", b"new", {}, BASE_VERSION + 10)[0] == 200
    status, last_modified, _, _ = _put(batched, "/wbg/lww", b"old", {}, BASE_VERSION)
    assert status == 200 and last_modified == http_date(BASE_VERSION + 10)
    assert requests.get(batched + "/files/wbg/lww", timeout=10).content == b"new"
    r = requests.delete(batched + "/files/wbg/lww", params={"last_modified": http_date(BASE_VERSION + 20)},
                        timeout=10)
    assert r.status_code == 200
    status, last_modified, _, _ = _put(batched, "/wbg/lww", b"older", {}, BASE_VERSION + 15)
    assert status == 409 and last_modified == http_date(BASE_VERSION + 20)


def test_gateway_small_puts_reach_every_replica(gateways):
    c, batched, _ = gateways
    names = ["/wbg/many/%d" % i for i in range(40)]

    def put(name):
        return _put(batched, name, name.encode() * 10, {})[0]

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(put, names)) == {200}
    # W=2 answers; the third replica is written in the background: wait for it
    import time
    deadline = time.monotonic() + 20
    for url in c.node_urls:
        for name in names:
            while True:
                record = c.node_record(url, name)
                if record is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert record is not None and record.sha256 == hashlib.sha256(name.encode() * 10).hexdigest()


def _batched_files(c):
    total = 0
    for url in c.node_urls:
        for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("filetracker_node_batched_files_total "):
                total += float(line.split()[1])
    return total


def test_gateway_small_puts_go_in_batches_and_a_bad_one_fails_alone(gateways):
    c, batched, streamed = gateways
    before = _batched_files(c)
    names = ["/wbg/mix/%d" % i for i in range(30)]

    def put(name):
        headers = {"SHA256-Checksum": "2" * 64} if name.endswith("/7") else {}
        return _put(batched, name, name.encode(), headers)[0]

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(put, names))
    assert codes == [400 if n.endswith("/7") else 200 for n in names]
    for name in names:
        r = requests.get(batched + "/files" + name, timeout=10)
        assert (r.status_code, r.content) == ((404, r.content) if name.endswith("/7") else (200, name.encode()))
    # every replica of the 29 good files went through POST /_cluster/store (W=2 answered, 3 written)
    import time
    deadline = time.monotonic() + 20
    while _batched_files(c) - before < 29 * 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _batched_files(c) - before == 29 * 3
    # the streamed gateway does not batch
    before = _batched_files(c)
    assert _put(streamed, "/wbg/mix/streamed", b"s", {})[0] == 200
    time.sleep(0.5)
    assert _batched_files(c) == before


@pytest.mark.parametrize("path,headers", [
    ("/files/wbg/huge@%d" % 2 ** 63, {}),
    ("/files/wbg/huge@%d" % (2 ** 64 + 5), {}),
    ("/files/wbg/after-year-9999@253402300800", {}),
    ("/files/wbg/huge-size@1700000000", {"Logical-Size": str(10 ** 25)}),
])
def test_gateway_out_of_range_numbers_answer_like_the_streamed_path(gateways, path, headers):
    c, batched, streamed = gateways
    a = requests.put(batched + path, data=b"x", headers=headers, timeout=30)
    b = requests.put(streamed + path, data=b"x", headers=headers, timeout=30)
    assert a.status_code == b.status_code and a.status_code in (400, 413), (a.headers, b.headers)
    assert "Traceback" not in a.text


@pytest.mark.parametrize("which", ["batched", "streamed"])
def test_gateway_round_trips_the_last_version_an_http_date_carries(gateways, which):
    """Year 9999's last second is stored and answered; one second later is refused (above)."""
    c, batched, streamed = gateways
    url = batched if which == "batched" else streamed
    name = "/wbg/year-9999-" + which
    assert _put(url, name, b"far", {}, version=MAX_VERSION)[:2] == (200, http_date(MAX_VERSION))
    for method in (requests.get, requests.head):
        r = method(url + "/files" + name, timeout=30)
        assert r.status_code == 200 and r.headers["Last-Modified"] == http_date(MAX_VERSION), r.headers
    assert requests.get(url + "/files" + name, timeout=30).content == b"far"


@pytest.mark.parametrize("version", ["253402300800", "9223372036854775808", "9999999999999999999", "-1", "1.5", "x"])
def test_node_refuses_versions_it_cannot_store(cluster_factory, version):
    """The internal PUT's ``?version=`` (a 500 from the store before, for 2**63 .. 10**19-1)."""
    c = cluster_factory(nodes=1, replicas=1)
    r = requests.put(c.urls[0] + "/_cluster/files/v", params={"version": version}, data=b"x",
                     headers=c.headers(), timeout=10)
    assert r.status_code == 400 and "version" in r.headers.get("X-Exception", ""), r.headers
    assert c.record(0, "/v") is None


def test_gateway_counts_its_batches(gateways):
    c, batched, _ = gateways

    def counters():
        out = {}
        for line in requests.get(batched + "/metrics", timeout=10).text.splitlines():
            if line.startswith("filetracker_gateway_store_"):
                name, value = line.split()
                out[name] = float(value)
        return out

    before = counters()
    for i in range(5):
        assert _put(batched, "/wbg/counted/%d" % i, b"c", {})[0] == 200
    import time
    deadline = time.monotonic() + 10
    while counters()["filetracker_gateway_store_batch_files_total"] - \
            before["filetracker_gateway_store_batch_files_total"] < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    after = counters()
    assert after["filetracker_gateway_store_batch_files_total"] - before["filetracker_gateway_store_batch_files_total"] == 15
    assert 5 <= after["filetracker_gateway_store_batches_total"] - before["filetracker_gateway_store_batches_total"] <= 15
    assert after["filetracker_gateway_store_queue_refusals_total"] == before["filetracker_gateway_store_queue_refusals_total"]
    assert after["filetracker_gateway_store_queued_bytes"] == 0
