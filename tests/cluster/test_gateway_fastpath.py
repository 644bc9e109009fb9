"""The gateway's fast path for small GET/HEAD (cluster/gateway/fastpath.py) answers exactly
what the full handler answers, counts like it, hands everything else over without
asking a node twice, and keeps HTTP/1.x connection semantics."""

import os
import re
import socket
import time

import pytest
import requests

from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date, wait_until
from tests.security.support import raw_bytes

V = BASE_VERSION
SMALL = b"small body \x00\xff" * 100
BIG = os.urandom((4 << 20) + 12345)  # beyond the first piece (4 MiB): handed over, relayed


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # --no-avoid-slow: the slow-node watch probes quiet nodes with batched lookups of its own
    # (cluster/gateway/latency.py), which test_handed_over_requests_reuse_the_read would count
    c = TestCluster(tmp_path_factory.mktemp("fastpath"), nodes=3, gateway_args=["--no-avoid-slow"]).start()
    try:
        full = c.start_gateway(["--no-fast-reads"])
        logged = c.start_gateway(["--log-level", "INFO"])
        files = {"/fp/small": SMALL, "/fp/empty": b"", "/fp/big": BIG, "/fp/a b+c%": b"spaces",
                 "/fp/za\u017c\u00f3\u0142\u0107": b"utf-8 name", "/fp/gone": b"deleted below"}
        for name, data in files.items():
            r = requests.put(c.gw + "/files" + requests.utils.quote(name), data=data, timeout=30,
                             params={"last_modified": http_date(V)})
            assert r.status_code == 200, r.text
        r = requests.delete(c.gw + "/files/fp/gone", params={"last_modified": http_date(V + 1)}, timeout=10)
        assert r.status_code == 200, r.text
        yield c, full, logged
    finally:
        c.stop()


def _answer(method, url, **kwargs):
    r = requests.request(method, url, timeout=30, **kwargs)
    headers = {k: v for k, v in r.headers.items() if k != "Date"}
    return r.status_code, headers, r.content


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path,extra", [
    ("/files/fp/small", {}),
    ("/files/fp/empty", {}),
    ("/files/fp/big", {}),                                # larger than the first piece
    ("/files/fp/a%20b%2Bc%25", {}),                      # percent escapes
    ("/files/fp/za%C5%BC%C3%B3%C5%82%C4%87", {}),        # UTF-8
    ("/files/fp/small@1", {}),                           # a version in the path is ignored
    ("/files/fp/gone", {}),                              # a tombstone: 404
    ("/files/fp/missing", {}),                           # a miss: 404 after asking every owner
    ("/files/fp/%FF", {}),                               # not UTF-8: 400
    ("/files/", {}),                                     # no name: 400
    ("/files/fp/../x", {}),                              # invalid name: 400
    ("/files/fp/small?x=1", {}),                         # a query: the full path
    ("/files/fp/small", {"headers": {"Range": "bytes=3-9"}}),
    ("/files/fp/small", {"headers": {"X-Pad": "x" * (70 * 1024)}}),  # over the header limit: 431
])
def test_fast_and_full_paths_answer_alike(cluster, method, path, extra):
    c, full, _ = cluster
    fast = _answer(method, c.gw + path, **extra)
    slow = _answer(method, full + path, **extra)
    assert fast == slow
    if path == "/files/fp/small" and not extra:
        assert fast[0] == 200 and fast[2] == (SMALL if method == "GET" else b"")
        assert fast[1]["Content-Length"] == str(len(SMALL))


def _fetches(c):
    """POST /_cluster/fetch requests the nodes answered so far (their own metrics)."""
    total = 0
    for url in c.node_urls:
        text = requests.get(url + "/metrics", headers=c.headers, timeout=10).text
        total += sum(float(v) for v in re.findall(
            r'^filetracker_http_requests_total\{method="POST",route="_cluster/fetch",status="200"\} (\S+)$',
            text, re.M))
    return int(total)


def test_handed_over_requests_reuse_the_read(cluster):
    """A miss and a large body leave the fast path after its read: the handler goes on from
    that read (R=2 fetches, plus one for the third owner on a miss), not from a new one."""
    c, _, _ = cluster
    for path, status, fetches in (("/files/fp/nothing-here", 404, 3), ("/files/fp/big", 200, 2),
                                  ("/files/fp/small", 200, 2)):
        before = _fetches(c)
        r = requests.get(c.gw + path, timeout=30)
        assert r.status_code == status
        assert _fetches(c) - before == fetches, path


def _metrics(url):
    """``(text, {series: value})`` of a service's /metrics."""
    r = requests.get(url + "/metrics", timeout=10)
    return r.content, {k: float(v) for k, v in re.findall(r"^(\S+) (\S+)$", r.text, re.M)}


def test_fast_answers_are_counted_and_logged(cluster):
    c, _, logged = cluster
    ok = 'filetracker_http_requests_total{method="GET",route="files",status="200"}'
    sent = 'filetracker_http_sent_bytes_total{method="GET"}'
    text, before = _metrics(logged)
    for _ in range(3):
        assert requests.get(logged + "/files/fp/small", timeout=10).content == SMALL
    assert requests.head(logged + "/files/fp/small", timeout=10).status_code == 200
    _, after = _metrics(logged)
    assert after[ok] == before.get(ok, 0) + 3
    assert after[sent] == before.get(sent, 0) + len(text) + 3 * len(SMALL)  # the first /metrics too
    log_path = c.gateways[c.gateway_urls.index(logged)].log_path
    line = "GET /files/fp/small 200 in=0 out=%d " % len(SMALL)
    assert wait_until(lambda: open(log_path).read().count(line) >= 3, 15)
    assert "HEAD /files/fp/small 200 in=0 out=0 " in open(log_path).read()


def _exchange(sock, request, answers=1):
    """Send ``request`` (bytes); read ``answers`` whole answers (Content-Length framed)."""
    sock.sendall(request)
    data, out = b"", []
    deadline = time.monotonic() + 10
    while len(out) < answers and time.monotonic() < deadline:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1")
            length = int(re.search(r"(?im)^content-length: *(\d+)", head).group(1))
            is_head = request.split(b"\r\n\r\n")[len(out)].startswith(b"HEAD")
            end = head_end + 4 + (0 if is_head else length)
            if len(data) >= end:
                out.append((head, data[head_end + 4:end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return out


def test_pipelined_requests_and_http10_keep_alive(cluster):
    c, _, _ = cluster
    port = int(c.gw.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        # three requests in one write: answered in order on the one connection
        got = _exchange(s, b"GET /files/fp/small HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"HEAD /files/fp/empty HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /files/fp/missing HTTP/1.1\r\nHost: x\r\n\r\n", answers=3)
        assert [h.split(" ", 2)[1] for h, _ in got] == ["200", "200", "404"]
        assert got[0][1] == SMALL and got[1][1] == b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(2):  # an HTTP/1.0 client asking for keep-alive keeps its connection
            [(head, body)] = _exchange(s, b"GET /files/fp/small HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert re.search(r"(?im)^connection: keep-alive", head) and body == SMALL
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        [(head, body)] = _exchange(s, b"GET /files/fp/small HTTP/1.0\r\n\r\n")
        assert body == SMALL
        assert s.recv(10) == b""  # plain HTTP/1.0: closed after the answer


def test_clients_leaving_early_do_not_disturb(cluster):
    c, _, _ = cluster
    port = int(c.gw.rsplit(":", 1)[1])
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /files/fp/small HTTP/1.1\r\nHost: x\r\n\r\n")
    assert requests.get(c.gw + "/files/fp/small", timeout=10).content == SMALL
    log = open(c.gateways[0].log_path).read()
    assert "Traceback" not in log and "ERROR" not in log


def _status_of_raw(url, request):
    """The status code of the answer to the raw ``request`` (read until the server closes), or None."""
    data = raw_bytes(url, request)
    return int(data.split(b" ", 2)[1]) if data else None


@pytest.mark.parametrize("request_bytes", [
    b"GET /files/fp/small HTTP/1.1\r\n\r\n",                          # HTTP/1.1 needs a Host
    b"GET /files/fp/missing HTTP/1.1\r\n\r\n",                        # ... also when handed over
    b"GET /files/fp/small HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",    # two Hosts
    b"HEAD /files/fp/small HTTP/1.1\r\nHost: a b\r\n\r\n",            # not a host
    b"GET /files/fp/small HTTP/1.0\r\n\r\n",                          # HTTP/1.0 may leave it out
])
def test_host_header_checked_like_tornado(cluster, request_bytes):
    c, full, _ = cluster
    assert _status_of_raw(c.gw, request_bytes) == _status_of_raw(full, request_bytes) is not None
    log = open(c.gateways[0].log_path).read()
    assert "Traceback" not in log and "ERROR" not in log
