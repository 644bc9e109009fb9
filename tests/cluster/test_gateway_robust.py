"""Gateway robustness on its data path (real node and gateway processes).

* a miss among the R owners asked is not a 404 while another owner holds the file;
* a gateway started before its nodes waits briefly for the ring instead of answering 503;
* owners refusing an upload (507: disk reserve) are replaced by handoff nodes;
* a 503 "not enough replicas" caused by nodes' upload bound carries ``Retry-After``.
"""

import asyncio
import os
import socket
import threading
import time

import msgpack
import pytest
import requests
from tornado.httpserver import HTTPServer

from cluster.gateway.app import make_app
from cluster.gateway.config import GatewayConfig
from cluster.ring import Ring
from tests.cluster.conftest import SECRET, NodeCluster
from tests.cluster.test_admin_support import admin
from tests.cluster.test_e2e_support import BASE_VERSION, http_date, wait_until
from tests.support.procs import free_port

V = BASE_VERSION


def gw_put(gw, name, data, version, **headers):
    return requests.put(gw + "/files" + name, params={"last_modified": http_date(version)}, data=data,
                        headers=headers, timeout=30)


def owner_indexes(c, name):
    ring = Ring.initial(c.members, replicas=c.replicas)
    return [c.urls.index(n.url) for n in ring.owners(name)]


def test_miss_on_the_read_quorum_asks_the_other_owners(cluster_factory):
    """The file is only on the last owner (the R=2 asked first lack it): served, then repaired."""
    c = cluster_factory(nodes=3, gateway=True, gateway_args=["--timeout", "2"])
    gw = c.gateway_url
    for k in range(3):
        name = "/miss/f%d" % k
        owners = owner_indexes(c, name)
        data = os.urandom(1000 + k * 100_000)
        assert c.put(owners[-1], name, data, V + k).status_code == 200
        r = requests.get(gw + "/files" + name, timeout=10)
        assert r.status_code == 200 and r.content == data, (name, r.status_code, r.headers)
        assert requests.head(gw + "/files" + name, timeout=10).status_code == 200
        # read repair brings the owners asked first up to date
        assert wait_until(lambda n=name, o=owners: all(c.record(i, n) is not None for i in o), 10), name
    assert requests.get(gw + "/files/miss/none", timeout=10).status_code == 404


def test_miss_after_add_node_asks_the_previous_owners(cluster_factory):
    """After add-node (no data moved yet) a file only on a former owner is served, not a 404."""
    c = cluster_factory(nodes=4, members=3, gateway=True, gateway_args=["--timeout", "3"])
    gw = c.gateway_url
    assert requests.get(gw + "/files/prev/warmup", timeout=10).status_code == 404  # ring epoch 1 known
    r = admin(c, "add-node", c.urls[3])
    assert "added" in r.stdout, r.stdout + r.stderr
    ring = c.client.get_ring(c.urls[0])
    assert ring.epoch == 2
    names = []
    for k in range(200):
        name = "/prev/f%d" % k
        owners = [n.url for n in ring.owners(name)]
        if c.urls[3] in owners:
            former = [i for i in range(3) if c.urls[i] not in owners][0]
            names.append((name, former))
        if len(names) == 3:
            break
    # the gateway learns epoch 2 from a node's X-Ring-Epoch
    requests.get(gw + "/files/prev/warmup", timeout=10)
    assert wait_until(lambda: _gw_epoch(c) == 2, 10)
    for k, (name, former) in enumerate(names):
        data = b"only on a former owner %d" % k
        assert c.put(former, name, data, V).status_code == 200
        r = requests.get(gw + "/files" + name, timeout=10)
        assert r.status_code == 200 and r.content == data, (name, r.status_code, r.headers)


def test_older_version_on_the_owners_asked_after_add_node(cluster_factory):
    """The R owners asked after add-node can be a former owner that missed the newest write and the
    new node, which has not received it yet: the previous owners are asked too, so the acknowledged
    version is served (it served the older one; found by a model-based check)."""
    c = cluster_factory(nodes=4, members=3, gateway=True, gateway_args=["--timeout", "3"])
    gw = c.gateway_url
    assert requests.get(gw + "/files/tr/warmup", timeout=10).status_code == 404  # ring epoch 1 known
    assert "added" in admin(c, "add-node", c.urls[3]).stdout
    names = _lagging_names(c, "/tr/f")
    requests.get(gw + "/files/tr/warmup", timeout=10)   # the gateway learns epoch 2
    assert wait_until(lambda: _gw_epoch(c) == 2, 10)
    for name, lagging in names:
        _write_past(c, name, lagging)
        for method in ("GET", "HEAD"):
            r = requests.request(method, gw + "/files" + name, timeout=10)
            assert r.status_code == 200 and r.headers["Last-Modified"] == http_date(V + 1), (name, method)
        assert requests.get(gw + "/files" + name, timeout=10).content == b"version two"


def test_a_gateway_started_after_add_node_asks_the_nodes_still_holding_the_data(cluster_factory):
    """The case above, for a gateway started after the ring change and with no time window
    (``--transition-reads 0``): it never saw the old ring, so it served the older version.  It
    now learns from the nodes which partitions they hold without owning them (GET
    /_cluster/foreign, polled) and asks those holders too, until the data has moved."""
    c = cluster_factory(nodes=4, members=3, gateway_args=["--timeout", "3", "--transition-reads", "0"])
    assert "added" in admin(c, "add-node", c.urls[3]).stdout
    names = _lagging_names(c, "/late/f")
    for name, lagging in names:
        _write_past(c, name, lagging)
    c.start_gateway()
    gw = c.gateway_url

    def settled():
        doc = requests.get(gw + "/status", params={"format": "json"}, timeout=10).json()
        return doc["foreign"]["settled_epoch"] == 2 and doc["foreign"]["partitions_held"]
    assert wait_until(settled, 20)
    for name, _ in names:
        for method in ("GET", "HEAD"):
            r = requests.request(method, gw + "/files" + name, timeout=10)
            assert r.status_code == 200 and r.headers["Last-Modified"] == http_date(V + 1), (name, method)
        assert requests.get(gw + "/files" + name, timeout=10).content == b"version two"
    # once handed off, the former owners hold nothing of it and reads ask the owners alone
    for i in range(4):
        c.run(i, "handoff")

    def held(i):   # the node reuses its list for up to 5 s
        return msgpack.unpackb(requests.get(c.urls[i] + "/_cluster/foreign", headers=c.headers(), timeout=10).content)
    assert wait_until(lambda: all(held(i) == {"epoch": 2, "partitions": []} for i in range(4)), 15)


def test_older_version_after_two_ring_changes_in_a_row(cluster_factory):
    """Two add-node in a row, no data moved: a name moved by the first change is read from owners
    of the last ring; the owners under both replaced rings are asked (only the last replaced ring
    was remembered, so the older version was served; found by a review)."""
    c = cluster_factory(nodes=5, members=3, gateway=True, gateway_args=["--timeout", "3"])
    gw = c.gateway_url
    assert requests.get(gw + "/files/tr2/warmup", timeout=10).status_code == 404  # ring epoch 1 known
    rings = [c.ring]
    for epoch, new in ((2, 3), (3, 4)):
        assert "added" in admin(c, "add-node", c.urls[new]).stdout
        rings.append(c.client.get_ring(c.urls[0]))
        requests.get(gw + "/files/tr2/warmup", timeout=10)
        assert wait_until(lambda e=epoch: _gw_epoch(c) == e, 10)
    first, middle, ring = rings
    names = []
    for k in range(5000):
        name = "/tr2/f%d" % k
        owners = [c.urls.index(n.url) for n in ring.owners(name)]
        asked = owners[:2]   # the R=2 a read asks now
        old = [c.urls.index(n.url) for n in first.owners(name)]
        lagging = [i for i in asked if i in old]
        # moved by the first change only: the ring before the last holds no ring-1 owner more
        if len(lagging) == 1 and 3 in asked and [c.urls.index(n.url) for n in middle.owners(name)] == owners:
            names.append((name, lagging[0]))
        if len(names) == 3:
            break
    assert names
    for name, lagging in names:
        for i in range(3):
            assert c.put(i, name, b"version one", V).status_code == 200
        for i in range(3):   # the newer write reached the two other owners under ring 1: W=2
            if i != lagging:
                assert c.put(i, name, b"version two", V + 1).status_code == 200
        r = requests.get(gw + "/files" + name, timeout=10)
        assert r.status_code == 200 and r.content == b"version two", name


def test_a_stalled_replica_beyond_the_quorum_is_dropped_not_waited_for(cluster_factory):
    """A node that takes the body slowly but never for --timeout at a stretch (a degraded link, a
    failing disk) held every large upload to its pace (a 32 MiB PUT: 38.8 s with one node's link at
    6 Mbit/s, found by a network-fault exploration).  Beyond the write quorum it may hold the body
    back about 2 s (or half the upload's time); then it is dropped and repaired later.  Here it is
    stopped outright under a 30 s timeout: the upload used to wait those 30 s."""
    c = cluster_factory(nodes=3, gateway=True, gateway_args=["--timeout", "30"])
    data = os.urandom(48 << 20)
    assert gw_put(c.gateway_url, "/lag/warm", b"w", V).status_code == 200   # connections open
    c.pause(2)
    try:
        r = requests.put(c.gateway_url + "/files/lag/big", params={"last_modified": http_date(V)}, data=data,
                         timeout=20)
        assert r.status_code == 200, (r.status_code, r.headers)
    finally:
        c.resume(2)
    assert requests.get(c.gateway_url + "/files/lag/big", timeout=20).content == data
    assert "fell behind the other replicas" in open(c.gateway.log_path).read()
    c.run(2, "sync")   # the dropped replica gets the file from the others
    assert c.content(2, "/lag/big") == data


def test_a_listing_asks_nodes_marked_down_when_too_few_are_live(cluster_factory):
    """Nodes just back but still marked down (until a probe sees them, at least 2 s): a listing
    asked only the live ones and answered 503 while reads got through (found by a network-fault
    exploration).  Like reads, it now asks the marked ones too when too few are live."""
    c = cluster_factory(nodes=3)
    assert c.put(0, "/ls/f", b"x", V).status_code == 200

    async def run():
        config = GatewayConfig(nodes=tuple(c.urls), cluster_secret=SECRET)
        app = make_app(config)
        server = HTTPServer(app)
        port = free_port()
        server.listen(port, "127.0.0.1")
        try:
            await app.services.view.get_ring()
            for url in c.urls[1:]:
                app.services.view.node_failed(url, "a test marks it down")
            assert not app.services.view.is_live(c.urls[1])
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: requests.get("http://127.0.0.1:%d/list/ls" % port, timeout=10))
        finally:
            server.stop()
            app.services.close()

    r = asyncio.run(run())
    assert (r.status_code, r.text) == (200, "f\n")


def _lagging_names(c, prefix):
    """Three ``(name, lagging)`` whose R=2 owners asked under the ring after add-node of node 3
    are node 3 and ``lagging``, a former owner."""
    ring = c.client.get_ring(c.urls[0])
    names = []
    for k in range(500):
        name = prefix + str(k)
        asked = [c.urls.index(n.url) for n in ring.owners(name)[:2]]   # the R=2 a read asks
        if 3 in asked:
            names.append((name, [i for i in asked if i != 3][0]))
        if len(names) == 3:
            return names
    raise AssertionError("fewer than 3 such names")


def _write_past(c, name, lagging):
    """Version one on the 3 former owners, then version two on all but ``lagging`` (W=2)."""
    for i in range(3):
        assert c.put(i, name, b"version one", V).status_code == 200
    for i in range(3):
        if i != lagging:
            assert c.put(i, name, b"version two", V + 1).status_code == 200


def _gw_epoch(c):
    r = requests.get(c.gateway_url + "/_cluster/ring", headers=c.headers(), timeout=10)
    return Ring.from_dict(msgpack.unpackb(r.content, raw=False)).epoch if r.status_code == 200 else None


def test_gateway_started_before_its_nodes(tmp_path):
    """No 503 burst: a request made before any node answers waits for the ring (it is not refused
    for want of one), and the first requests after the nodes are up succeed without any retry."""
    c = NodeCluster(tmp_path, nodes=3, gateway_args=["--timeout", "10"])
    try:
        c.start_gateway()
        time.sleep(0.5)  # the gateway's own first ring fetch fails: nobody answers yet
        early = {}

        def early_put():
            early["r"] = gw_put(c.gateway_url, "/early/first", b"before the nodes", V)

        t = threading.Thread(target=early_put)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # waiting for the ring, not answered 503 at once
        for i in range(3):
            c.start_node(i)
        t.join(30)
        r = early["r"]
        # nodes started one after the other: when the ring came from the first, the others may not
        # listen yet (an honest 503), but never "no ring"
        assert r.status_code == 200 or "no cluster node" not in r.headers.get("X-Exception", ""), r.headers
        for k in range(5):
            r = gw_put(c.gateway_url, "/early/f%d" % k, b"x%d" % k, V)
            assert r.status_code == 200, r.headers
            r = requests.get(c.gateway_url + "/files/early/f%d" % k, timeout=10)
            assert r.status_code == 200 and r.content == b"x%d" % k
    finally:
        c.stop()


class PerNodeArgsCluster(NodeCluster):
    """A :class:`NodeCluster` whose node ``i`` gets ``extra[i]`` arguments too."""

    __test__ = False

    def __init__(self, tmp, extra, **kwargs):
        super().__init__(tmp, **kwargs)
        self.extra = extra

    def node_argv(self, i):
        return super().node_argv(i) + list(self.extra.get(i, ()))


def names_owned_by(c, full, count):
    """``count`` names whose owners include every node index in ``full``."""
    out, k = [], 0
    while len(out) < count:
        name = "/full/f%d" % k
        if set(full) <= set(owner_indexes(c, name)):
            out.append(name)
        k += 1
    return out


def test_owners_with_a_full_disk_are_replaced_by_handoff_nodes(tmp_path):
    """Two owners refuse (507, reserve): the write still succeeds through the handoff node (early
    refusal for a large body, a resent copy for a small one); the hint reaches the owners once
    they have space again."""
    full = (0, 1)
    huge = ["--min-free-bytes", str(1 << 60)]
    c = PerNodeArgsCluster(tmp_path, {i: huge for i in full}, nodes=4, gateway=True,
                           gateway_args=["--timeout", "3"]).start()
    try:
        gw = c.gateway_url
        bodies = {}
        for name, size in zip(names_owned_by(c, full, 2), (300_000, 1_000), strict=True):
            data = os.urandom(size)
            r = gw_put(gw, name, data, V)
            assert r.status_code == 200, (name, r.status_code, r.headers, c.logs()[-3000:])
            bodies[name] = data
            spare = [i for i in range(4) if i not in owner_indexes(c, name)][0]
            assert c.record(spare, name) is not None  # held as a hint
            for i in full:
                assert c.record(i, name) is None
            r = requests.get(gw + "/files" + name, timeout=10)
            assert r.status_code == 200 and r.content == data
        # space returns: the owners restart without the reserve; the handoff pass delivers each
        # hint to the owner it stands for, anti-entropy the replica nobody held a hint for
        for i in full:
            c.extra[i] = ()
            c.restart(i)
        for i in (spare, *full):
            c.run(i, "all")
        for name, data in bodies.items():
            for i in full:
                assert c.content(i, name) == data, (name, i)
    finally:
        c.stop()


def hold_upload_slot(c, i):
    """Start an upload on node ``i`` and never finish it: with --max-uploads 1 the node is busy."""
    port = c.ports[i]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(("PUT /_cluster/files/busy/held?version=%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                  "X-Cluster-Secret: %s\r\nContent-Length: 1000\r\n\r\nabc" % (V, port, c.secret)).encode())
    return sock


def test_busy_nodes_503_carries_retry_after(tmp_path):
    """Owners refusing uploads (503 + Retry-After, their --max-uploads bound is taken): the gateway's
    503 says Retry-After too, for a large body (refused before it is sent) and a small one."""
    busy = ["--max-uploads", "1"]
    c = PerNodeArgsCluster(tmp_path, {0: busy, 1: busy}, nodes=3, gateway=True,
                           gateway_args=["--timeout", "3"]).start()
    held = []
    try:
        held = [hold_upload_slot(c, i) for i in (0, 1)]
        time.sleep(1.0)   # each node has read the held request's head (taken its slot): ms, unless busy
        for size in (300_000, 1_000):
            r = gw_put(c.gateway_url, "/busy/f%d" % size, os.urandom(size), V)
            assert r.status_code == 503, (size, r.headers)
            assert r.headers.get("Retry-After", "").isdigit(), (size, r.headers)
    finally:
        for sock in held:
            sock.close()
        c.stop()


def _owned_by(ring, urls, prefix):
    """A name under ``prefix`` whose owners are exactly the nodes ``urls``."""
    for i in range(10000):
        name = "%s/%d" % (prefix, i)
        if {n.url for n in ring.owners(name)} == set(urls):
            return name
    raise AssertionError("no such name")


@pytest.mark.parametrize("size, gateway_args", [(300_000, []), (30_000, ["--no-batch-writes"])],
                         ids=["streamed", "small-streamed"])
def test_a_streamed_put_goes_to_a_handoff_node_when_two_owners_freeze(cluster_factory, size, gateway_args):
    """Two of three owners frozen (SIGSTOP) before the gateway marked them down: a small PUT's
    batch gave their shares to the handoff node and got 200, a streamed PUT got 503 "1 of 2
    stored" (and later landed everywhere). A streamed PUT now adds handoff nodes beside owners
    that do not say 100 Continue, and a small streamed one resends its copy on a timeout."""
    c = cluster_factory(nodes=4, replicas=3, gateway=True, gateway_args=["--timeout", "3"] + gateway_args)
    name = _owned_by(c.ring, c.urls[:3], "/freeze")
    assert gw_put(c.gateway_url, name, b"p", V).status_code == 200   # connections open
    data = os.urandom(size)
    c.pause(0)
    c.pause(1)
    try:
        r = gw_put(c.gateway_url, name, data, V + 10)
        assert r.status_code == 200, (r.status_code, r.headers.get("X-Exception"))
        hinted = c.record(3, name)
        assert hinted is not None and hinted.version == V + 10   # the handoff node holds it
    finally:
        c.resume(0)
        c.resume(1)
    # a sloppy quorum (as Dynamo's): the owners get it from the handoff node's hint
    c.run(3, "all")
    for i in range(3):
        assert c.content(i, name) == data
    assert requests.get(c.gateway_url + "/files" + name, timeout=20).content == data
