"""Bitrot: a flipped byte in a stored blob is detected (SHA-256) on read and by the scrubber,
the client still gets the right bytes from another replica, and the bad copy is repaired.

Nodes run with ``--no-background`` so each step is visible: a detection quarantines
the blob at once (``<dir>/quarantine/``); the repair runs when the test asks for it
(``POST /_cluster/run/repair``; a node with background loops repairs by itself at once).
"""

import os
import re
import time

import pytest
import requests

from tests.cluster.test_admin_support import admin
from tests.faults.conftest import blob_path, figures, flip_byte, gw_put, sha256, wait_until

pytestmark = pytest.mark.faults

BASE = 1795550400
MiB = 1 << 20


def quarantined(c, i):
    d = os.path.join(c.dirs[i], "quarantine")
    return os.listdir(d) if os.path.isdir(d) else []


def blob_get(c, i, sha, **headers):
    return requests.get(c.urls[i] + "/_cluster/blobs/" + sha, headers=c.headers(**headers), timeout=30)


def names_read_first_from(c, node, down, want, others):
    """``want`` names whose first owner other than node ``down`` is node ``node`` (a gateway
    reads their body there while ``down`` is paused), then ``others`` names read elsewhere.
    The ring depends on the nodes' random ports, so the names are picked, not assumed."""
    mine, rest, i = [], [], 1
    while len(mine) < want or len(rest) < others:
        name = "/rot/f%d" % i
        first = next(n.id for n in c.ring.owners(name) if n.id != c.urls[down])
        (mine if first == c.urls[node] and len(mine) < want else rest).append(name)
        i += 1
    return mine + rest[:others]


def test_corrupt_blob_detected_on_read_and_repaired(cluster_factory):
    c = cluster_factory(3, gateway=True, gateway_args=["--timeout", "3"])
    gw = c.gateway_url
    names = ["/rot/f0"] + names_read_first_from(c, node=1, down=2, want=2, others=3)
    files = {name: os.urandom(100_000 + i) for i, name in enumerate(names)}
    for n, (name, data) in enumerate(files.items()):
        assert gw_put(gw, name, data, BASE + n).status_code == 200
    faults = 0
    # 1. direct read of a corrupt copy: 503 + reason, blob quarantined, nothing served
    name, data = "/rot/f0", files["/rot/f0"]
    sha = sha256(data)
    flip_byte(blob_path(c, 0, sha))
    faults += 1
    r = blob_get(c, 0, sha)
    assert r.status_code == 503 and "checksum mismatch" in r.headers["X-Exception"], r.headers
    assert not os.path.exists(blob_path(c, 0, sha)) and len(quarantined(c, 0)) == 1
    assert requests.get(c.urls[0] + "/_cluster/files" + name, headers=c.headers(),
                        timeout=10).status_code != 200          # the record's blob is gone here: no bad bytes
    rep = c.run(0, "repair")["repair"]
    assert rep["repaired"] == 1 and rep["pending"] == 0, rep
    r = blob_get(c, 0, sha)
    assert r.status_code == 200 and r.content == data
    # 2. through the gateway: the corrupt replica fails before its first byte, the next one serves
    reads = 0
    for data in list(files.values())[1:]:
        flip_byte(blob_path(c, 1, sha256(data)))
        faults += 1
    c.pause(2)      # only nodes 0 and 1 answer: two of the files are read from node 1's corrupt copies
    try:
        for _ in range(6):
            for name, data in list(files.items())[1:]:
                r = requests.get(gw + "/files" + name, timeout=30)
                reads += 1
                assert r.status_code == 200 and r.content == data, (name, r.status_code, r.headers)
    finally:
        c.resume(2)
    detected = len(quarantined(c, 1))
    assert detected >= 1, "the gateway never read node 1's corrupt copies"
    rep = c.run(1, "repair")["repair"]
    assert rep["repaired"] == detected and rep["integrity"]["corrupt"] == detected, rep
    # the copies not read yet are still corrupt: the scrubber finds them without any read
    scrub = c.run(1, "scrub")["scrub"]
    assert scrub["corrupt"] == 5 - detected, scrub
    print("\nbitrot: %d gateway reads, all right; they met %d of the 5 corrupt copies on node 1, "
          "the scrubber found the other %d" % (reads, detected, 5 - detected))
    assert scrub.get("repair", {"repaired": 0})["repaired"] == 5 - detected, scrub
    for name, data in files.items():
        for i in range(3):
            r = blob_get(c, i, sha256(data))
            assert r.status_code == 200 and r.content == data, (i, name)
    r = admin(c, "verify")
    assert r.returncode == 0
    assert "1 corrupt blobs found on reads or scrubs, 1 quarantined, 1 repaired from replicas" in r.stdout
    assert "5 corrupt blobs found on reads or scrubs, 5 quarantined, 5 repaired" in r.stdout
    figures("bitrot on read", cases=reads + 1, faults=faults, acked_checked=len(files) * 3)


def test_scrubber_finds_silent_rot_rate_limited(cluster_factory):
    rate = 4 * MiB
    c = cluster_factory(3, node_args=["--scrub-rate", str(rate)])
    payload = {"/scrub/f%d" % i: os.urandom(2 * MiB) for i in range(6)}
    for n, (name, data) in enumerate(payload.items()):
        for i in range(3):
            assert c.put(i, name, data, BASE + n).status_code == 200
    # every copy on node 2 verified once by a read (now in its LRU) ...
    for data in payload.values():
        assert blob_get(c, 2, sha256(data)).status_code == 200
    # ... then two of them rot silently (same mtime): reads trust the LRU, the scrubber does not
    bad = list(payload.values())[:2]
    for data in bad:
        flip_byte(blob_path(c, 2, sha256(data)), keep_mtime=True)
    t0 = time.monotonic()
    s = c.run(2, "scrub")["scrub"]
    took = time.monotonic() - t0
    assert s["corrupt"] == 2 and s["blobs"] == 4 and s["complete"], s
    assert s["repair"]["repaired"] == 2, s
    # 12 MiB hashed at 4 MiB/s (one second of burst): at least ~2 s
    hashed = sum(len(d) for d in payload.values())
    assert took >= (hashed - rate) / rate * 0.9, (took, s)
    for data in payload.values():
        r = blob_get(c, 2, sha256(data))
        assert r.status_code == 200 and sha256(r.content) == sha256(data)
    figures("bitrot by scrubber", cases=len(payload), faults=len(bad), acked_checked=len(payload))
    print("scrub pass: %d MiB at --scrub-rate %d MiB/s took %.2f s" % (hashed // MiB, rate // MiB, took))


def test_large_blob_hashed_once_for_many_ranges(cluster_factory):
    c = cluster_factory(3, gateway=True)
    data = os.urandom(20 * MiB)
    assert gw_put(c.gateway_url, "/big/one", data, BASE).status_code == 200
    sha = sha256(data)
    # acknowledged at W=2: node 0 may be the third replica, still being written
    assert wait_until(lambda: os.path.exists(blob_path(c, 0, sha)), timeout=30)
    got = []
    for start in range(0, len(data), 4 * MiB):
        r = blob_get(c, 0, sha, Range="bytes=%d-%d" % (start, start + 4 * MiB - 1))
        assert r.status_code == 206
        got.append(r.content)
    assert b"".join(got) == data
    counters = c.run(0, "repair")["repair"]["integrity"]
    # the node wrote this blob itself (hashed as it arrived): no range hashes it again
    assert counters["trusted_on_write"] == 1 and counters["verified"] == 0, counters
    assert counters["cache_hits"] >= 5, counters
    # the file changed (a new mtime): the next range hashes it, once, and the others reuse that
    path = blob_path(c, 0, sha)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    for start in range(0, len(data), 4 * MiB):
        r = blob_get(c, 0, sha, Range="bytes=%d-%d" % (start, start + 4 * MiB - 1))
        assert r.status_code == 206 and r.content == data[start:start + 4 * MiB]
    after = c.run(0, "repair")["repair"]["integrity"]
    assert after["verified"] == 1, after
    assert after["cache_hits"] >= counters["cache_hits"] + 4, after

    r = requests.get(c.gateway_url + "/files/big/one", timeout=60)
    assert r.status_code == 200 and sha256(r.content) == sha


def test_background_repair_right_after_detection(cluster_factory):
    c = cluster_factory(3, sync_interval=30)          # background loops on (the repair task waits for work)
    data = os.urandom(300_000)
    sha = sha256(data)
    for i in range(3):
        assert c.put(i, "/auto/f", data, BASE).status_code == 200
    flip_byte(blob_path(c, 0, sha))
    t0 = time.monotonic()
    assert blob_get(c, 0, sha).status_code == 503
    assert wait_until(lambda: blob_get(c, 0, sha).status_code == 200, 15)
    took = time.monotonic() - t0
    assert blob_get(c, 0, sha).content == data
    print("\nbitrot: detected on read and repaired by the background task in %.2f s" % took)
    # the node's public read route checks too (a client reading a node directly)
    flip_byte(blob_path(c, 1, sha))
    r = requests.get(c.urls[1] + "/files/auto/f", timeout=10)
    assert r.status_code == 503 and "checksum mismatch" in r.headers["X-Exception"], r.headers
    assert wait_until(lambda: requests.get(c.urls[1] + "/files/auto/f", timeout=10).content == data, 15)
    figures("bitrot background repair", cases=3, faults=2, acked_checked=1)


def _fetches(c):
    """``POST /_cluster/fetch`` requests the nodes answered so far (any status; their own metrics)."""
    total = 0.0
    for url in c.urls:
        text = requests.get(url + "/metrics", headers=c.headers(), timeout=10).text
        total += sum(float(v) for v in re.findall(
            r'^filetracker_http_requests_total\{method="POST",route="_cluster/fetch",status="\d+"\} (\S+)$',
            text, re.M))
    return int(total)


def test_failed_direct_read_is_not_repeated_by_the_gateway(cluster_factory):
    """A corrupt copy on the first owner makes the gateway's direct read fail (the batched read
    answers "corrupt"): the fast path hands the request to the handler marked DIRECT_FAILED, which
    goes straight to the quorum read and another holder's bytes instead of asking the same two
    nodes again (2 batched fetches, not 4); the client gets the right bytes."""
    # --no-avoid-slow: the slow-node watch probes quiet nodes with batched lookups of its own
    # (cluster/gateway/latency.py), which the count below would include
    c = cluster_factory(3, gateway=True, gateway_args=["--no-avoid-slow"])
    name, data = "/rot/fast", os.urandom(20_000)  # small: read within the batch
    assert gw_put(c.gateway_url, name, data, BASE).status_code == 200
    # acknowledged at W=2: the first owner may be the third replica, still being written
    assert wait_until(lambda: all(c.record(i, name) is not None for i in range(3)), timeout=30)
    first = c.urls.index(c.ring.owners(name)[0].id)
    flip_byte(blob_path(c, first, sha256(data)))
    before = _fetches(c)
    r = requests.get(c.gateway_url + "/files" + name, timeout=30)
    assert r.status_code == 200 and r.content == data
    assert _fetches(c) - before == 2
    figures("bitrot on read", cases=1, faults=1, acked_checked=1)
