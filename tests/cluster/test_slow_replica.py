"""A slow-but-alive node: the gateway reads from the fast replicas (cluster/gateway/latency.py).

Node 2 is reached through a loopback proxy that delays every answer by
300 ms (it advertises the proxy's URL, so the ring, its peers and the gateway
all go through it).  With R=2 of N=3 every file has two fast replicas, so
once the gateway has timed node 2's lookups it must stop asking it; the
proxy counts the lookup batches node 2 still gets.  Before this, a GET
asked the first two live owners of its name, node 2 for two thirds of the
names, and each of those GETs waited for it.  A second gateway started with
``--no-avoid-slow`` shows that behaviour (the escape hatch).
"""

import json
import os
import time

import requests

from cluster.gateway.latency import PROBE_SECONDS
from tests.cluster.conftest import NodeCluster
from tests.support.delayproxy import DelayProxy
from tests.support.procs import Service, free_port, script
from tests.support.waiting import wait_until

FETCH = b"POST /_cluster/fetch "
DELAY = 0.3


def _status(gateway_url):
    r = requests.get(gateway_url + "/status", params={"format": "json"}, timeout=30)
    assert r.status_code == 200
    return json.loads(r.text)


def _slow_flags(gateway_url):
    return {n["url"]: n["slow"] for n in _status(gateway_url)["nodes"]}


def _metric(gateway_url, name, node):
    text = requests.get(gateway_url + "/metrics", timeout=30).text
    line = next((ln for ln in text.splitlines() if ln.startswith('%s{node="%s"}' % (name, node))), None)
    return None if line is None else float(line.rsplit(" ", 1)[1])


def test_reads_go_to_fast_replicas_while_one_node_is_slow(tmp_path):
    cluster = NodeCluster(tmp_path, nodes=3, gateway=True)
    proxy = DelayProxy(cluster.ports[2]).start()
    cluster.urls[2] = proxy.url
    cluster.members = list(cluster.urls)
    cluster.node_extra_args[2] = ["--advertise", proxy.url]
    try:
        cluster.start()
        gw = cluster.gateway_url
        files = {"/slow/f%02d.txt" % i: b"content %d " % i * 20 for i in range(24)}
        for name, data in files.items():
            r = requests.put(gw + "/files" + name, data=data, headers={"Last-Modified": "Sat, 28 Nov 2026 04:00:00 GMT"},
                             timeout=30)
            assert r.status_code == 200, r.text

        def read_all(count=None):
            for name, data in list(files.items())[:count]:
                r = requests.get(gw + "/files" + name, timeout=30)
                assert r.status_code == 200 and r.content == data, (name, r.status_code)

        read_all()  # every node timed while all are fast
        assert not any(_slow_flags(gw).values())

        proxy.delay = DELAY
        # the gateway notices after three of node 2's answers in a row come back late
        assert wait_until(lambda: (read_all(), _slow_flags(gw)[proxy.url])[1], timeout=60), cluster.logs()
        assert _metric(gw, "filetracker_gateway_node_slow", proxy.url) == 1.0
        assert _metric(gw, "filetracker_gateway_node_fetch_seconds", proxy.url) > 0.05
        status = requests.get(gw + "/status", timeout=30).text
        assert "last (slow:" in status

        proxy.reset_counts()
        began = time.monotonic()
        for _ in range(3):
            read_all()   # 72 GETs, each needing 2 replicas: node 0 and node 1 are enough
        took = time.monotonic() - began
        # what still reaches node 2 is the probe, at most one lookup a second (PROBE_SECONDS): the
        # bound grows with the time the reads took (a busy machine), asking node 2 for its share of
        # the 72 GETs would be dozens more (each costing DELAY, which this bound allows per second)
        assert proxy.count(FETCH) <= max(6, 3 + took / PROBE_SECONDS), (proxy.count(FETCH), took)
        assert _status(gw)["latency"][proxy.url]["slow"] is True

        # the escape hatch: a gateway that reads owners in ring order asks node 2 for most names
        port = free_port()
        plain_url = "http://127.0.0.1:%d" % port
        plain = Service([script("filetracker-gateway"), "--port", str(port), "--nodes", ",".join(cluster.urls),
                         "--log-level", "WARNING", "--no-avoid-slow"]
                        + (["--cluster-secret-file", cluster.secret_file] if cluster.secret_file else []),
                        os.path.join(str(tmp_path), "plain-gateway.log"), ready_url=plain_url + "/version/").start()
        try:
            proxy.reset_counts()
            for name, data in files.items():
                assert requests.get(plain_url + "/files" + name, timeout=30).content == data
            assert proxy.count(FETCH) >= 8, proxy.count(FETCH)
            assert not any(_slow_flags(plain_url).values())
        finally:
            plain.stop()

        # a slow node is still asked when it is needed: with node 0 gone, R=2 needs it
        cluster.kill9(0)
        read_all(4)

        cluster.restart(0)
        proxy.delay = 0.0
        # fast probes bring it back (three prompt answers in a row, about a second apart, after a 2 s hold)
        assert wait_until(lambda: not _slow_flags(gw)[proxy.url], timeout=30), cluster.logs()
        proxy.reset_counts()
        read_all()
        assert proxy.count(FETCH) > 0   # reads ask it again
    finally:
        cluster.stop()
        proxy.stop()
