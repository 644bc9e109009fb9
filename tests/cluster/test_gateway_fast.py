"""Performance paths of the gateway keep the protocol: --processes, direct reads, pooled PUTs."""

import os
import signal
import time

import requests

from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date, version_of, wait_until

V = BASE_VERSION


def put(gw, name, data, version):
    return requests.put(gw + "/files" + name, params={"last_modified": http_date(version)}, data=data,
                        timeout=30)


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def test_two_gateway_processes_serve_and_stop(tmp_path):
    c = TestCluster(tmp_path, nodes=3, gateway_args=["--processes", "2"]).start()
    try:
        gw = c.gateways[0]
        children = _children(gw.pid)
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
