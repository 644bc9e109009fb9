"""Gateway robustness on its data path (real node and gateway processes).

* a miss among the R owners asked is not a 404 while another owner holds the file;
* a gateway started before its nodes waits briefly for the ring instead of answering 503;
* owners refusing an upload (507: disk reserve) are replaced by handoff nodes;
* a 503 "not enough replicas" caused by nodes' upload bound carries ``Retry-After``.
"""

import os
import threading
import time

import requests

from cluster.ring import Ring
from tests.cluster.conftest import NodeCluster
from tests.cluster.test_e2e_support import BASE_VERSION, http_date, wait_until

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
