"""A node's read cache (filetracker/storage/readcache.py) over a real node: every read path answers
from it, and every write is visible on every read path as soon as it is acknowledged."""

import msgpack
import requests

from cluster.peers import quote_name
from filetracker.httpdate import parse_version
from filetracker.records import Record
from tests.support.races import race_writes_and_reads

V = 1_700_000_000


def reads(c, name):
    """What each read path of node 0 says of ``name``: ``{path: (status or record, body)}``."""
    url, h = c.urls[0], c.headers()
    pub = requests.get(url + "/files" + quote_name(name), timeout=30)
    pub_head = requests.head(url + "/files" + quote_name(name), timeout=30)  # after the GET: a cache hit
    internal = requests.get(url + "/_cluster/files" + quote_name(name), headers=h, timeout=30)
    lookup = msgpack.unpackb(requests.post(url + "/_cluster/lookup", data=msgpack.packb([name]), headers=h,
                                           timeout=30).content)[0]
    many = msgpack.unpackb(requests.post(url + "/_cluster/read", data=msgpack.packb([name]), headers=h,
                                         timeout=30).content)[0]
    return {
        "public": (pub.status_code, pub.content if pub.ok else None,
                   parse_version(pub.headers["Last-Modified"]) if pub.ok else None),
        "public_head": (pub_head.status_code, pub_head.headers.get("Content-Length"),
                        parse_version(pub_head.headers["Last-Modified"]) if pub_head.ok else None),
        "internal": (internal.status_code, internal.content if internal.ok else None,
                     internal.headers.get("X-Version")),
        "head": c.record(0, name),
        "lookup": lookup,
        "read": many,
    }


def expect_live(got, name, version, body):
    assert got["public"] == (200, body, version)
    assert got["public_head"] == (200, str(len(body)), version)
    assert got["internal"] == (200, body, str(version))
    assert got["head"] is not None and (got["head"].version, got["head"].deleted) == (version, False)
    assert got["lookup"][0] == version and got["lookup"][3] is False
    assert got["read"][0] == "ok" and got["read"][1] == version and got["read"][4] == body


def cache_stats(c):
    return c.status(0)["read_cache"]


def test_every_read_path_sees_each_write_at_once(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1, node_args=["--allow-public-writes"])
    name = "/rc/a.txt"
    assert c.put(0, name, b"one", V + 1).ok
    for _ in range(3):  # the first round fills the cache, the others are answered from it
        expect_live(reads(c, name), name, V + 1, b"one")
    assert cache_stats(c)["hits"] >= 8

    assert c.put(0, name, b"second", V + 2).ok
    expect_live(reads(c, name), name, V + 2, b"second")

    assert c.delete(0, name, V + 3).ok
    for _ in range(2):
        got = reads(c, name)
        assert got["public"][0] == 404 and got["internal"][0] == 404 and got["public_head"][0] == 404
        assert got["head"] == Record(name, V + 3, "", 0, True)
        assert got["lookup"][0] == V + 3 and got["lookup"][3] is True
        assert got["read"][0] == "missing" and got["read"][1][0] == V + 3

    assert c.put(0, name, b"back", V + 4).ok
    expect_live(reads(c, name), name, V + 4, b"back")
    # an older write loses the merge and changes nothing
    assert c.put(0, name, b"stale", V + 1).ok
    expect_live(reads(c, name), name, V + 4, b"back")
    # the public PUT path invalidates too
    r = requests.put(c.urls[0] + "/files" + name, data=b"public", timeout=30,
                     params={"last_modified": "Sat, 01 Jan 2033 00:00:00 GMT"})
    assert r.status_code == 200, r.text
    assert reads(c, name)["public"][1] == b"public"


def test_ranges_and_large_files_keep_their_answers(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1)
    small, big = b"0123456789", bytes(range(256)) * 1024  # 256 KiB: above the cache's body limit
    assert c.put(0, "/rc/s", small, V).ok and c.put(0, "/rc/b", big, V).ok
    for _ in range(2):
        r = requests.get(c.urls[0] + "/_cluster/files/rc/s", headers=c.headers(Range="bytes=2-4"), timeout=30)
        assert r.status_code == 206 and r.content == b"234" and r.headers["Content-Range"] == "bytes 2-4/10"
        assert c.content(0, "/rc/b") == big
        assert c.record(0, "/rc/b").size == len(big)
    assert cache_stats(c)["bytes"] < len(big)


def test_reads_racing_writes_never_go_back(cluster_factory):
    """One writer acknowledges versions in order; readers on every path never see a version
    older than the last one acknowledged before their request began."""
    c = cluster_factory(nodes=1, replicas=1)
    name, h = "/rc/race", c.headers()
    assert c.put(0, name, b"%d" % V, V).ok

    def write(v):
        r = c.put(0, name, b"%d" % v, v)
        assert r.ok, r.text

    def read_get():
        r = requests.get(c.urls[0] + "/_cluster/files" + name, headers=h, timeout=30)
        return int(r.headers["X-Version"]), r.content

    def read_lookup():
        r = requests.post(c.urls[0] + "/_cluster/lookup", data=msgpack.packb([name]), headers=h, timeout=30)
        return msgpack.unpackb(r.content)[0][0], None

    errors, last = race_writes_and_reads(write, [read_get, read_get, read_lookup], V, 150)
    assert not errors, errors[:3]
    assert last == V + 150 and c.record(0, name).version == V + 150
    assert cache_stats(c)["hits"] > 0


def test_only_verified_bodies_are_cached_and_a_quarantine_empties_the_cache(cluster_factory):
    """A blob above --verify-reads-max-bytes is served at once and checked in the background: its
    bytes are not kept; when a check finds rot, no cached answer outlives the quarantine."""
    import hashlib
    import os

    from tests.faults.conftest import blob_path, flip_byte

    c = cluster_factory(nodes=1, replicas=1, node_args=["--verify-reads-max-bytes", "4096"])
    big, small = os.urandom(10_000), os.urandom(3_000)
    assert c.put(0, "/rc/unverified", big, V).ok and c.put(0, "/rc/verified", small, V).ok
    for _ in range(2):
        assert c.content(0, "/rc/unverified") == big and c.content(0, "/rc/verified") == small
    held = cache_stats(c)["bytes"]
    assert len(small) < held < len(big), held  # the small body is kept, the big one is not
    # silent rot of the small blob (same mtime: the integrity LRU still vouches for it), found by the scrubber
    flip_byte(blob_path(c, 0, hashlib.sha256(small).hexdigest()), keep_mtime=True)
    scrub = c.run(0, "scrub")["scrub"]
    assert scrub["corrupt"] == 1, scrub
    r = requests.get(c.urls[0] + "/_cluster/files/rc/verified", headers=c.headers(), timeout=30)
    assert not (r.status_code == 200 and r.content == small), "served from a cache the quarantine should have emptied"
    # the blob is gone from blobs/ (quarantined): the public HEAD says so, like before the cache,
    # even right after a record lookup put the (still live) record alone in the cache
    requests.post(c.urls[0] + "/_cluster/lookup", data=msgpack.packb(["/rc/verified"]), headers=c.headers(),
                  timeout=30).raise_for_status()
    assert requests.head(c.urls[0] + "/files/rc/verified", timeout=30).status_code == 404
    assert cache_stats(c)["bytes"] < len(small)


def test_a_repair_pass_forgets_each_record_it_drops(tmp_path):
    """``verify(repair=True)`` drops bad records one by one during a long pass: each leaves the cache at once."""
    from cluster.node.state import TrackedStore
    from filetracker.storage import ObjectStore
    from filetracker.storage.readcache import ReadCache

    store = ObjectStore(str(tmp_path))
    try:
        cache = ReadCache(1 << 20)
        tracked = TrackedStore(store, lambda name: 0, cache)
        up = tracked.begin_upload()
        up.write(b"abc")
        record, _ = tracked.commit_upload(up, "/a", V)
        cache.fill("/a", record, b"abc", cache.generation("/a"))
        assert store._repair(record, drop_blob=False)  # what a repair pass does for a bad record
        assert cache.get("/a") is None and store.get_record("/a") is None
    finally:
        store.close()


def test_a_peer_copying_files_does_not_fill_the_cache(cluster_factory):
    """``POST /_cluster/read?cache=0`` (what a peer's anti-entropy and a rebalance use) answers
    like the plain request but keeps nothing in the read cache, so copying files between nodes
    never evicts what clients read; the plain request (the gateway's) fills it."""
    c = cluster_factory(nodes=1, replicas=1)
    names = ["/rc/copy/%d" % i for i in range(5)]
    for n in names:
        assert c.put(0, n, n.encode(), V).ok
    before = cache_stats(c)["entries"]
    rows = c.client.read_small(c.urls[0], names)
    assert [r[4] for r in rows] == [n.encode() for n in names] and all(r[0] == "ok" for r in rows)
    assert cache_stats(c)["entries"] == before
    plain = msgpack.unpackb(requests.post(c.urls[0] + "/_cluster/read", data=msgpack.packb(names),
                                          headers=c.headers(), timeout=30).content)
    assert plain == rows and cache_stats(c)["entries"] == before + len(names)
