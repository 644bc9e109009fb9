"""Issue 5: the nodes' internal API (and the gateway's ring endpoint) require the cluster secret.

Without it (or with a wrong one) every ``/_cluster/`` request is a 403 with a
message and nothing is done: no replica stored, no tombstone, no ring
installed, no background pass.  A client reaching a node directly can read but
not write (the node runs without ``--allow-public-writes``).
"""

import os
import socket
from urllib.parse import urlsplit

import msgpack
import pytest
import requests

from cluster.peers import quote_name
from tests.cluster.conftest import SECRET
from tests.security.conftest import start_gateway
from tests.security.support import files_under

pytestmark = pytest.mark.security

NAME = "/internal/kept"
BODY = b"stored with the secret\n"


@pytest.fixture(scope="module")
def cluster(nodes3, tmp_path_factory):
    """The shared nodes plus a gateway (as ``cluster.gateway_url``) and one file stored on node 0."""
    g = start_gateway(nodes3, [], tmp_path_factory.mktemp("internal"))
    nodes3.gateway_url = g.url
    try:
        r = nodes3.put(0, NAME, BODY, 1700000000)
        assert r.status_code == 200, r.headers
        yield nodes3
    finally:
        nodes3.gateway_url = None
        g.stop()


def _requests(c):
    url = c.urls[0]
    ring = msgpack.packb(dict(c.ring.to_dict(), epoch=99), use_bin_type=True)
    return [
        ("GET", url + "/_cluster/ring", None),
        ("PUT", url + "/_cluster/ring", ring),
        ("PUT", url + "/_cluster/files" + quote_name("/internal/new") + "?version=1700000001", b"intruder"),
        ("PUT", url + "/_cluster/files" + quote_name(NAME) + "?version=1800000000", b"overwrite"),
        ("DELETE", url + "/_cluster/files" + quote_name(NAME) + "?version=1800000000", None),
        ("HEAD", url + "/_cluster/files" + quote_name(NAME), None),
        ("GET", url + "/_cluster/files" + quote_name(NAME), None),
        ("GET", url + "/_cluster/blobs/" + "0" * 64, None),
        ("GET", url + "/_cluster/list/?max_version=2000000000", None),
        ("POST", url + "/_cluster/records", msgpack.packb([], use_bin_type=True)),
        ("GET", url + "/_cluster/digests", None),
        ("GET", url + "/_cluster/partition/0", None),
        ("GET", url + "/_cluster/status", None),
        ("POST", url + "/_cluster/run/all", b""),
        ("POST", url + "/_cluster/verify?repair=1", b""),
        ("GET", c.gateway_url + "/_cluster/ring", None),
    ]


@pytest.mark.parametrize("secret", [None, "wrong-secret", SECRET + "x", ""])
def test_internal_api_refuses_without_the_secret(cluster, secret):
    blobs_before = [files_under(os.path.join(d, "blobs")) for d in cluster.dirs]
    headers = {} if secret is None else {"X-Cluster-Secret": secret}
    for method, url, body in _requests(cluster):
        r = requests.request(method, url, data=body, headers=headers, timeout=10)
        assert r.status_code == 403, (method, url, r.status_code)
        if method != "HEAD":
            assert r.headers.get("X-Exception"), (method, url)
    # nothing was done
    rec = cluster.record(0, NAME)
    assert rec is not None and rec.version == 1700000000 and not rec.deleted
    assert cluster.content(0, NAME) == BODY
    assert cluster.record(0, "/internal/new") is None
    assert cluster.status(0)["epoch"] == 1
    assert [files_under(os.path.join(d, "blobs")) for d in cluster.dirs] == blobs_before


def test_with_the_secret_it_works(cluster):
    h = {"X-Cluster-Secret": SECRET}
    assert requests.get(cluster.urls[0] + "/_cluster/ring", headers=h, timeout=10).status_code == 200
    assert requests.get(cluster.gateway_url + "/_cluster/ring", headers=h, timeout=10).status_code == 200
    assert requests.get(cluster.urls[0] + "/_cluster/status", headers=h, timeout=10).status_code == 200


def test_node_public_api_reads_but_refuses_writes(lone_node):
    cluster = lone_node  # started without --allow-public-writes
    assert cluster.put(0, NAME, BODY, 1700000000).status_code == 200
    url = cluster.urls[0]
    assert requests.get(url + "/files" + NAME, timeout=10).content == BODY
    lm = {"last_modified": "Sat, 23 Nov 2030 22:13:20 -0000"}
    r = requests.put(url + "/files/internal/public", params=lm, data=b"x", timeout=10)
    assert r.status_code == 403 and "public writes" in r.headers["X-Exception"]
    r = requests.delete(url + "/files" + NAME, params=lm, timeout=10)
    assert r.status_code == 403
    assert cluster.record(0, "/internal/public") is None
    assert cluster.content(0, NAME) == BODY


@pytest.mark.parametrize("path", ["/_cluster/records", "/_cluster/lookup", "/_cluster/store", "/_cluster/ring"])
def test_a_body_without_the_secret_is_refused_before_it_is_read(cluster, path):
    """The secret is checked as soon as the request head arrives: a client without it that
    announces 64 MiB gets its 403 at once. Before, the node read (and kept in memory) the whole
    body first, 64 MiB per connection, and a body that never came held the connection."""
    parts = urlsplit(cluster.urls[0])
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), 64 << 20)
                  if path != "/_cluster/ring" else
                  b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), 64 << 20))
        s.sendall(b"x" * 1000)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert b"X-Exception: the internal cluster API requires the cluster secret" in answer
    assert b"Connection: close" in answer   # the body is not read: the connection cannot be reused
