"""Truncated and slow uploads, and a SIGSTOPped node under writes.

A body cut short (the client closes mid-body, or a gzip stream ends early) is
never visible: no record, no blob, no temp file left on any node, through the
gateway and straight to a node.  A slow (trickling) upload is invisible until
its last byte, and a client that gives up mid-trickle leaves nothing behind and
frees its connections (later requests are served normally).  A SIGSTOPped node
costs writes nothing (W of the others ack them) and catches up after SIGCONT.
"""

import gzip
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.cluster.test_admin_support import admin
from tests.cluster.test_e2e_support import http_date
from tests.faults.conftest import SECRET, figures, gw_put, tmp_files, wait_until

pytestmark = pytest.mark.faults

BASE = 1795550400


def raw_put(url, path, headers, body_parts, pause=0.0, close=True):
    """Send a PUT by hand: head, then ``body_parts`` (sleeping ``pause`` between them); returns the socket."""
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = "PUT %s HTTP/1.1\r\nHost: %s\r\n" % (path, parts.netloc)
    head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
    s.sendall(head.encode())
    for p in body_parts:
        s.sendall(p)
        if pause:
            time.sleep(pause)
    if close:
        s.close()
    return s


def nothing_left(c, names):
    def clean():
        return all(tmp_files(c, i) == [] for i in range(len(c.urls)))
    assert wait_until(clean, 10), [tmp_files(c, i) for i in range(len(c.urls))]
    for name in names:
        for i in range(len(c.urls)):
            assert c.record(i, name) is None, (i, name)
        assert requests.get(c.gateway_url + "/files" + name, timeout=10).status_code == 404


def test_truncated_uploads_leave_nothing(cluster_factory):
    c = cluster_factory(3, gateway=True, gateway_args=["--timeout", "2"])
    gw = c.gateway_url
    cases = 0
    data = os.urandom(1 << 20)
    # through the gateway: 300 KB of a declared 1 MiB, then the client is gone
    for k, cut in enumerate((1, 64 * 1024, 300_000, len(data) - 1)):
        raw_put(gw, "/files/trunc/gw%d?last_modified=%s" % (k, http_date(BASE).replace(" ", "%20")),
                {"Content-Length": str(len(data))}, [data[:cut]])
        cases += 1
    # straight to a node (internal API)
    for k, cut in enumerate((1, 300_000)):
        raw_put(c.urls[0], "/_cluster/files/trunc/node%d?version=%d" % (k, BASE),
                {"Content-Length": str(len(data)), "X-Cluster-Secret": SECRET}, [data[:cut]])
        cases += 1
    # a complete request whose gzip stream is cut: 400 with the reason, nothing stored
    gz = gzip.compress(data)[:-100]
    r = requests.put(gw + "/files/trunc/gz", params={"last_modified": http_date(BASE)}, data=gz,
                     headers={"Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 400 and "gzip" in r.headers["X-Exception"], r.headers
    cases += 1
    time.sleep(0.5)
    nothing_left(c, ["/trunc/gw%d" % k for k in range(4)] + ["/trunc/node0", "/trunc/node1", "/trunc/gz"])
    # connections freed: the cluster serves normally afterwards
    assert gw_put(gw, "/trunc/after", b"fine", BASE).status_code == 200
    assert requests.get(gw + "/files/trunc/after", timeout=10).content == b"fine"
    figures("truncated uploads", cases=cases, faults=cases, acked_checked=1)


def test_slow_upload_invisible_until_complete_and_abandoned_one_freed(cluster_factory):
    c = cluster_factory(3, gateway=True, gateway_args=["--timeout", "2"])
    gw = c.gateway_url
    data = os.urandom(200_000)
    pieces = [data[i:i + 10_000] for i in range(0, len(data), 10_000)]
    path = "/files/slow/done?last_modified=%s" % http_date(BASE).replace(" ", "%20")
    s = raw_put(gw, path, {"Content-Length": str(len(data))}, pieces[:-1], pause=0.1, close=False)
    # 2 s into the trickle: nothing visible anywhere
    assert requests.get(gw + "/files/slow/done", timeout=10).status_code == 404
    assert all(c.record(i, "/slow/done") is None for i in range(3))
    s.sendall(pieces[-1])
    s.settimeout(20)
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert requests.get(gw + "/files/slow/done", timeout=10).content == data
    # a trickling client that gives up half-way
    path = "/files/slow/abandoned?last_modified=%s" % http_date(BASE).replace(" ", "%20")
    raw_put(gw, path, {"Content-Length": str(len(data))}, pieces[:8], pause=0.1)
    time.sleep(0.5)
    nothing_left(c, ["/slow/abandoned"])
    assert gw_put(gw, "/slow/after", b"fine", BASE).status_code == 200
    figures("slow uploads", cases=2, faults=1, acked_checked=2)


def test_sigstop_node_under_writes(cluster_factory):
    c = cluster_factory(3, gateway=True, gateway_args=["--timeout", "1"])
    gw = c.gateway_url
    acked = {}
    c.pause(1)
    try:
        t0 = time.monotonic()
        for k in range(30):
            name, data = "/hang/f%02d" % k, os.urandom(5000 + k)
            r = gw_put(gw, name, data, BASE + k)
            assert r.status_code == 200, r.headers
            acked[name] = data
        took = time.monotonic() - t0
        for name, data in acked.items():
            assert requests.get(gw + "/files" + name, timeout=30).content == data
    finally:
        c.resume(1)
    for i in (0, 2):
        c.run(i, "sync")
    for name, data in acked.items():
        assert c.content(1, name) == data
    assert admin(c, "verify").returncode == 0
    print("\nSIGSTOP: 30 writes acked in %.1f s with a node stopped (gateway timeout 1 s)" % took)
    figures("SIGSTOP hang", cases=60, faults=1, acked_checked=len(acked))
