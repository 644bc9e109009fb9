"""Restart of a node with a stale ring: it was down while a node was added.

Node 2 is killed; the admin adds node 3 (ring epoch 2, pushed to the nodes that
are up) and files keep being written.  Node 2 comes back with its stored ring
(epoch 1): it serves and accepts writes at once, a stale handoff pass does no
harm, its first anti-entropy pass adopts epoch 2 from a peer's ``X-Ring-Epoch``,
and after a rebalance ``verify`` is clean and every acknowledged file reads back.
"""

import os

import pytest
import requests

from tests.cluster.test_admin_support import admin, start_gateway
from tests.faults.conftest import NodeCluster, figures, gw_put, wait_until

pytestmark = pytest.mark.faults

BASE = 1795550400


def test_restart_with_stale_ring(tmp_path):
    c = NodeCluster(tmp_path, nodes=4, members=3)
    gw_svc = None
    try:
        for i in range(3):
            c.start_node(i)
        gw_svc, gw = start_gateway(c, c.urls[:3], "gw")
        acked = {}

        def write(prefix, n, v0):
            for k in range(n):
                name = "/stale/%s%03d" % (prefix, k)
                data = os.urandom(2000 + k)
                r = gw_put(gw, name, data, v0 + k)
                assert r.status_code == 200, (name, r.headers)
                acked[name] = data

        write("a", 40, BASE)
        c.kill9(2)
        c.start_node(3)
        r = admin(c, "add-node", c.urls[3], url=",".join(c.urls[:2]))
        # exit 1: the ring is installed on every node that is up, node 2 is named as missing it
        assert "added" in r.stdout and "did not take ring epoch 2" in r.stdout, r.stdout + r.stderr
        assert c.client.get_ring(c.urls[0]).epoch == 2
        write("b", 40, BASE + 1000)                       # node 2 down: others + handoff take them
        c.start_node(2)                                    # comes back with epoch 1
        assert c.client.get_ring(c.urls[2]).epoch == 1
        write("c", 40, BASE + 2000)                        # the stale node is a target again
        # Before any background pass, a file whose acked write (W=2) missed node 2 when it was
        # killed is absent from node 2 and the new node 3; when those two are the R asked, the
        # gateway asks the other owners (and the previous ring's) before a 404: none may miss.
        early = [n for n, d in acked.items() if requests.get(gw + "/files" + n, timeout=30).content != d]
        print("\nacked files not readable before anti-entropy ran: %d %s" % (len(early), early[:3]))
        assert early == []
        c.run(2, "handoff")                                # a pass under the stale ring
        c.run(2, "sync")                                   # sees X-Ring-Epoch 2 from peers: adopts it
        assert wait_until(lambda: c.client.get_ring(c.urls[2]).epoch == 2, 10)
        for i in (0, 1, 3):
            c.run(i, "all")
        for name, data in acked.items():
            r = requests.get(gw + "/files" + name, timeout=30)
            assert r.status_code == 200 and r.content == data, name
        r = admin(c, "rebalance")
        assert r.returncode == 0, r.stdout + r.stderr
        assert admin(c, "verify").returncode == 0
        lost = 0
        for name, data in acked.items():
            r = requests.get(gw + "/files" + name, timeout=30)
            lost += not (r.status_code == 200 and r.content == data)
        figures("stale ring restart", cases=len(acked), faults=2, acked_checked=len(acked), lost=lost)
        assert lost == 0
    finally:
        if gw_svc is not None:
            gw_svc.stop()
        c.stop()
