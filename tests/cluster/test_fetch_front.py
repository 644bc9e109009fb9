"""The node's front (cluster/node/fetchfront.py): ``POST /_cluster/fetch`` answered outside the
handler cycle with exactly the handler's answer; every other request, and every request the
front cannot answer, handed to the handlers; counted like any request.

Two one-node clusters hold the same records: one with the front (the default), one started
with ``--no-fast-fetch``; every request goes to both and the answers must be equal
(status, headers but ``Date``, body).
"""

import gzip
import re
import socket

import msgpack
import pytest
import requests
from tornado import httputil

from cluster.node.app import make_app, shutdown
from cluster.node.config import NodeConfig
from cluster.node.fetchfront import FETCH_BODY_MAX, NodeFront
from tests.cluster.conftest import SECRET

V = 1_700_000_000
FILES = {"/f/small": b"0123456789" * 50, "/f/empty": b"", "/f/big": bytes(range(256)) * 400,
         "/f/a b+c%": b"spaces", "/f/gone": b"x"}
LONG = ["/f/" + "n" * 200 + "/" + "m" * 80 + "/%d" % i for i in range(1000)]  # a valid lookup list of ~290 KB


@pytest.fixture
def nodes(cluster_factory):
    fast = cluster_factory(1, replicas=1)
    full = cluster_factory(1, replicas=1, node_args=["--no-fast-fetch"])
    for c in (fast, full):
        for name, data in FILES.items():
            assert c.put(0, name, data, V).status_code == 200
        assert c.delete(0, "/f/gone", V + 1).status_code == 200
    return fast, full


def _post(url, body, path="/_cluster/fetch", secret=SECRET, session=None, **headers):
    if secret is not None:
        headers["X-Cluster-Secret"] = secret
    r = (session or requests).post(url + path, data=body, headers=headers, timeout=30)
    return r.status_code, {k: v for k, v in r.headers.items() if k != "Date"}, r.content


def _fetch(lookup=(), read=()):
    return msgpack.packb({"lookup": list(lookup), "read": list(read)})


def _chunked(body):
    yield body[:3]
    yield body[3:]


CASES = {
    "reads and lookups": (_fetch(lookup=list(FILES) + ["/f/missing"], read=list(FILES) + ["/f/missing"]), {}),
    "only reads": (msgpack.packb({"read": ["/f/small", "/f/big"]}), {}),
    "empty map": (msgpack.packb({}), {}),
    "not msgpack": (b"\xc1garbage", {}),
    "empty body": (b"", {}),
    "not a map": (msgpack.packb(["/f/small"]), {}),
    "unknown key": (msgpack.packb({"lookup": [], "write": []}), {}),
    "invalid name": (_fetch(read=["no-slash"]), {}),
    "versioned name": (_fetch(lookup=["/f/small@1"]), {}),
    "too many reads": (_fetch(read=["/f/%d" % i for i in range(65)]), {}),
    "body above the front's limit": (_fetch(lookup=LONG), {}),
    "no secret": (_fetch(read=["/f/small"]), {"secret": None}),
    "wrong secret": (_fetch(read=["/f/small"]), {"secret": "not-the-secret"}),
    "query": (_fetch(read=["/f/small"]), {"path": "/_cluster/fetch?x=1"}),
    "gzip encoded": (gzip.compress(_fetch(read=["/f/small"])), {"Content-Encoding": "gzip"}),
    "form without boundary": (_fetch(read=["/f/small"]), {"Content-Type": "multipart/form-data"}),
}


def test_front_and_handler_answer_alike(nodes):
    fast, full = nodes
    assert len(CASES["body above the front's limit"][0]) > FETCH_BODY_MAX
    for label, (body, kwargs) in CASES.items():
        for _ in range(2):  # the first read fills the read cache, the second is answered from it
            got, want = _post(fast.urls[0], body, **kwargs), _post(full.urls[0], body, **kwargs)
            assert got == want, label
    # a body sent in chunks (Transfer-Encoding: chunked) goes to the handler
    got = _post(fast.urls[0], _chunked(_fetch(read=["/f/small"])))
    assert got == _post(full.urls[0], _chunked(_fetch(read=["/f/small"]))) and got[0] == 200


def test_the_answer_rows_and_headers(nodes):
    fast, _ = nodes
    status, headers, body = _post(fast.urls[0], _fetch(lookup=["/f/gone", "/f/missing"], read=["/f/small"]))
    assert status == 200
    assert headers["Content-Type"] == "application/msgpack" and headers["X-Ring-Epoch"] == "1"
    rows = msgpack.unpackb(body)
    assert rows["lookup"][0][0] == V + 1 and rows["lookup"][0][3] is True and rows["lookup"][1] is None
    assert rows["read"][0][0] == "ok" and rows["read"][0][4] == FILES["/f/small"]


def test_keep_alive_connection_mixes_front_and_handler_requests(nodes):
    fast, _ = nodes
    with requests.Session() as s:
        for _ in range(3):
            assert _post(fast.urls[0], _fetch(read=["/f/small"]), session=s)[0] == 200
            assert _post(fast.urls[0], b"junk", session=s)[0] == 400
            assert s.get(fast.urls[0] + "/version/", timeout=10).status_code == 200


def test_pipelined_requests_are_answered_in_order(nodes):
    fast, _ = nodes
    one, two = _fetch(read=["/f/small"]), _fetch(read=["/f/a b+c%"])
    port = int(fast.urls[0].rsplit(":", 1)[1])

    def request(body):
        return (b"POST /_cluster/fetch HTTP/1.1\r\nHost: x\r\nX-Cluster-Secret: %s\r\nContent-Length: %d\r\n\r\n"
                % (SECRET.encode(), len(body))) + body

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request(one) + request(b"junk") + request(two))
        data = b""
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b"spaces"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    statuses = re.findall(rb"HTTP/1.1 (\d+)", data)
    assert statuses == [b"200", b"400", b"200"]
    assert data.index(FILES["/f/small"]) < data.index(b"not valid msgpack") < data.index(b"spaces")


def _count(url):
    text = requests.get(url + "/metrics", timeout=10).text
    found = re.search(r'^filetracker_http_requests_total\{method="POST",route="_cluster/fetch",status="200"\} (\S+)$',
                      text, re.M)
    return float(found.group(1)) if found else 0.0


def test_front_answers_are_counted(nodes):
    fast, _ = nodes
    before = _count(fast.urls[0])
    for _ in range(3):
        assert _post(fast.urls[0], _fetch(read=["/f/small"]))[0] == 200
    assert _count(fast.urls[0]) == before + 3


@pytest.mark.parametrize("method,path,headers,taken", [
    ("POST", "/_cluster/fetch", {"Content-Length": "20"}, True),
    ("POST", "/_cluster/fetch", {"Content-Length": str(FETCH_BODY_MAX)}, True),
    ("POST", "/_cluster/fetch", {"Content-Length": str(FETCH_BODY_MAX + 1)}, False),
    ("POST", "/_cluster/fetch", {"Transfer-Encoding": "chunked"}, False),
    ("POST", "/_cluster/fetch", {"Content-Length": "20", "Content-Encoding": "gzip"}, False),
    ("POST", "/_cluster/fetch", {"Content-Length": "20", "Content-Type": "application/x-www-form-urlencoded"}, False),
    ("POST", "/_cluster/fetch", {"Content-Length": "x"}, False),
    ("POST", "/_cluster/fetch?x=1", {"Content-Length": "20"}, False),
    ("POST", "/_cluster/read", {"Content-Length": "20"}, False),
    ("GET", "/_cluster/fetch", {}, False),
    ("POST", "/_cluster/fetch", {"Content-Length": "20", "X-Cluster-Secret": "wrong"}, False),
    ("POST", "/_cluster/fetch", {"Content-Length": "20", "X-Cluster-Secret": None}, False),
    ("POST", "/_cluster/fetch", {"Content-Length": "20", "Host": "a,b"}, False),
])
def test_which_requests_the_front_takes(tmp_path, method, path, headers, taken):
    app = make_app(NodeConfig(dir=str(tmp_path), node_id="http://127.0.0.1:1", cluster_secret=SECRET,
                              background=False))
    try:
        front = NodeFront(app, app.node, app.ctx)
        fields = {"Host": "127.0.0.1", "X-Cluster-Secret": SECRET}
        fields.update(headers)
        h = httputil.HTTPHeaders({k: v for k, v in fields.items() if v is not None})
        start = httputil.RequestStartLine(method, path, "HTTP/1.1")
        assert (front.select(start, h) is not None) == taken
    finally:
        shutdown(app)
