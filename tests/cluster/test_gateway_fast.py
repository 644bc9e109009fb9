"""Performance paths of the gateway keep the protocol: --processes, direct reads, pooled PUTs."""

import os
import signal
import time

import requests

from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date, version_of, wait_until
from tests.support.procs import wait_for_children

V = BASE_VERSION


def put(gw, name, data, version):
    return requests.put(gw + "/files" + name, params={"last_modified": http_date(version)}, data=data,
                        timeout=30)


def test_two_gateway_processes_serve_and_stop(tmp_path):
    c = TestCluster(tmp_path, nodes=3, gateway_args=["--processes", "2"]).start()
    try:
        gw = c.gateways[0]
        children = wait_for_children(gw.pid, 2)
        assert len(children) == 2, children
        with requests.Session() as s:  # keep-alive and fresh connections both land on a child
            for i in range(20):
                r = s.put(c.gw + "/files/p/%d" % i, params={"last_modified": http_date(V + i)},
                          data=b"x%d" % i, timeout=30)
                assert r.status_code == 200, r.text
        for i in range(20):
            r = requests.get(c.gw + "/files/p/%d" % i, timeout=30)
            assert r.content == b"x%d" % i and version_of(r) == V + i
        os.kill(gw.pid, signal.SIGTERM)  # the parent forwards it and waits for both children
        assert wait_until(lambda: gw.proc.poll() is not None, 10)
        assert gw.proc.returncode == 0
        assert not [p for p in children if os.path.exists("/proc/%d" % p)
                    and open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[0] != "Z"]
    finally:
        c.stop()


def test_direct_read_serves_newest_and_falls_back(tmp_path):
    """The first owner holds an older version: the direct read must not serve it."""
    c = TestCluster(tmp_path, nodes=3).start()
    try:
        name = "/d/f"
        assert put(c.gw, name, b"old", V).status_code == 200
        owners = [n.url for n in c.ring.owners(name)]
        # a newer version on the 2nd and 3rd owners only (the first missed it)
        for u in owners[1:]:
            r = requests.put(u + "/_cluster/files" + name, params={"version": V + 1}, data=b"newer",
                             headers=c.headers, timeout=10)
            assert r.status_code == 200
        r = requests.get(c.gw + "/files" + name, timeout=10)
        assert r.content == b"newer" and version_of(r) == V + 1
        # read repair brought the first owner up to date
        assert wait_until(lambda: c.node_record(owners[0], name).version == V + 1, 10)
        # many PUTs and GETs over reused connections, a file larger than the node's one-hop size too
        big = os.urandom(3 << 20)
        assert put(c.gw, "/d/big", big, V).status_code == 200
        t0 = time.monotonic()
        for i in range(30):
            assert put(c.gw, "/d/n%d" % i, b"%d" % i, V).status_code == 200
            assert requests.get(c.gw + "/files/d/n%d" % i, timeout=10).content == b"%d" % i
        assert time.monotonic() - t0 < 60
        assert requests.get(c.gw + "/files/d/big", timeout=30).content == big
        r = requests.get(c.gw + "/files/d/big", headers={"Range": "bytes=100-199"}, timeout=30)
        assert r.status_code == 206 and r.content == big[100:200]
        assert requests.head(c.gw + "/files/d/big", timeout=10).headers["Content-Length"] == str(len(big))
    finally:
        c.stop()


def test_node_batch_endpoints(tmp_path):
    """POST /_cluster/lookup and /_cluster/read answer like HEAD and GET of each name."""
    import msgpack

    c = TestCluster(tmp_path, nodes=1, replicas=1).start()
    try:
        node = c.node_urls[0]
        big = os.urandom(100 * 1024)
        for name, data in (("/b/small", b"tiny"), ("/b/empty", b""), ("/b/big", big), ("/b/gone", b"x")):
            r = requests.put(node + "/_cluster/files" + name, params={"version": V}, data=data,
                             headers=c.headers, timeout=10)
            assert r.status_code == 200
        assert requests.delete(node + "/_cluster/files/b/gone", params={"version": V + 1}, headers=c.headers,
                               timeout=10).status_code == 200
        names = ["/b/small", "/b/empty", "/b/big", "/b/gone", "/b/never"]
        h = dict(c.headers, **{"Content-Type": "application/msgpack"})
        r = requests.post(node + "/_cluster/lookup", data=msgpack.packb(names), headers=h, timeout=10)
        assert r.status_code == 200
        rows = msgpack.unpackb(r.content, raw=False)
        assert [row and row[0] for row in rows] == [V, V, V, V + 1, None]
        assert rows[3][3] is True and rows[2][2] == len(big)
        r = requests.post(node + "/_cluster/read", data=msgpack.packb(names), headers=h, timeout=10)
        rows = msgpack.unpackb(r.content, raw=False)
        assert rows[0][0] == "ok" and rows[0][4] == b"tiny"
        assert rows[1][0] == "ok" and rows[1][4] == b""
        assert rows[2][0] == "big" and rows[2][3] == len(big)
        assert rows[3][0] == "missing" and rows[3][1][0] == V + 1 and rows[3][1][3] is True
        assert rows[4] == ["missing", None]
        # the cluster secret is required, bad input is a 400
        if c.headers:
            assert requests.post(node + "/_cluster/read", data=msgpack.packb(names), timeout=10).status_code == 403
        assert requests.post(node + "/_cluster/read", data=b"\xc1", headers=h, timeout=10).status_code == 400
        assert requests.post(node + "/_cluster/lookup", data=msgpack.packb(["rel"]), headers=h,
                             timeout=10).status_code == 400
        # /_cluster/fetch: both kinds in one request, each list answered like its own endpoint
        lookups = msgpack.unpackb(requests.post(node + "/_cluster/lookup", data=msgpack.packb(names), headers=h,
                                                timeout=10).content, raw=False)
        r = requests.post(node + "/_cluster/fetch", data=msgpack.packb({"lookup": names, "read": names[:3]}),
                          headers=h, timeout=10)
        assert r.status_code == 200
        both = msgpack.unpackb(r.content, raw=False)
        assert both == {"lookup": lookups, "read": rows[:3]}
        only = msgpack.unpackb(requests.post(node + "/_cluster/fetch", data=msgpack.packb({"read": ["/b/small"]}),
                                             headers=h, timeout=10).content, raw=False)
        assert only == {"lookup": [], "read": [rows[0]]}
        for bad in ([1, 2], {"lookup": "x"}, {"other": []}, {"read": ["/b"] * 65}, {"lookup": ["rel"]}):
            r = requests.post(node + "/_cluster/fetch", data=msgpack.packb(bad), headers=h, timeout=10)
            assert r.status_code == 400 and r.headers.get("X-Exception"), bad
    finally:
        c.stop()
