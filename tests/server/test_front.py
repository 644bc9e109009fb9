"""filetracker-server's fast front (filetracker/server/front.py with CachedReads): GET/HEAD of a
cached file answered outside the handler cycle, with exactly the handler's answer; everything
else handed to the handler; counted and logged like any request."""

import re
import socket

import pytest
import requests

from filetracker.httpdate import format_version
from tests.security.support import raw_bytes
from tests.server.conftest import start_server
from tests.support.waiting import wait_until

V = 1_700_000_000
FILES = {"/f/empty": b"", "/f/small": b"0123456789" * 50, "/f/big": bytes(range(256)) * 1024,
         "/f/a b+c%": b"spaces", "/f/za\u017c\u00f3\u0142\u0107": b"utf-8 name", "/f/gone": b"x"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("front")
    fast = start_server(tmp, "fast", extra=["--log-level", "INFO"])
    full = start_server(tmp, "full", extra=["--no-fast-reads"])
    try:
        for s in (fast, full):
            for name, data in FILES.items():
                r = requests.put(s.url + "/files" + requests.utils.quote(name), data=data, timeout=30,
                                 params={"last_modified": format_version(V)})
                assert r.status_code == 200, r.text
            r = requests.delete(s.url + "/files/f/gone", params={"last_modified": format_version(V + 1)},
                                timeout=30)
            assert r.status_code == 200
        yield fast, full
    finally:
        fast.stop()
        full.stop()


def _answer(method, url, **kwargs):
    r = requests.request(method, url, timeout=30, **kwargs)
    return r.status_code, {k: v for k, v in r.headers.items() if k != "Date"}, r.content


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path,extra", [
    ("/files/f/small", {}),
    ("/files/f/empty", {}),
    ("/files/f/big", {}),                                # above the cache's item size: the handler
    ("/files/f/a%20b%2Bc%25", {}),
    ("/files/f/za%C5%BC%C3%B3%C5%82%C4%87", {}),
    ("/files/f/small@1", {}),
    ("/files/f/gone", {}),
    ("/files/f/missing", {}),
    ("/files/f/%FF", {}),
    ("/files/", {}),
    ("/files/f/small?x=1", {}),
    ("/files/f/small", {"headers": {"Range": "bytes=3-9"}}),
    ("/files/f/small", {"headers": {"X-Pad": "x" * (70 * 1024)}}),
])
def test_front_and_handler_answer_alike(servers, method, path, extra):
    fast, full = servers
    for _ in range(2):  # the first answer fills the cache, the second comes from the front
        got, want = _answer(method, fast.url + path, **extra), _answer(method, full.url + path, **extra)
        assert got == want


def _metrics(url):
    r = requests.get(url + "/metrics", timeout=10)
    return r.content, {k: float(v) for k, v in re.findall(r"^(\S+) (\S+)$", r.text, re.M)}


def test_front_answers_are_counted_and_logged(servers):
    fast, _ = servers
    small = FILES["/f/small"]
    requests.get(fast.url + "/files/f/small", timeout=10)  # cached now
    ok = 'filetracker_http_requests_total{method="GET",route="files",status="200"}'
    sent = 'filetracker_http_sent_bytes_total{method="GET"}'
    text, before = _metrics(fast.url)
    for _ in range(3):
        assert requests.get(fast.url + "/files/f/small", timeout=10).content == small
    _, after = _metrics(fast.url)
    assert after[ok] == before[ok] + 3
    assert after[sent] == before[sent] + len(text) + 3 * len(small)
    line = "GET /files/f/small 200 in=0 out=%d " % len(small)
    assert wait_until(lambda: fast.service.log_tail(200000).count(line) >= 4, 15)


def test_writes_are_seen_at_once_through_the_front(servers):
    fast, _ = servers
    for i in range(20):
        r = requests.put(fast.url + "/files/f/changing", data=b"v%d" % i, timeout=10,
                         params={"last_modified": format_version(V + 10 + i)})
        assert r.status_code == 200
        for _ in range(2):
            assert requests.get(fast.url + "/files/f/changing", timeout=10).content == b"v%d" % i
    requests.delete(fast.url + "/files/f/changing", params={"last_modified": format_version(V + 99)},
                    timeout=10)
    assert requests.get(fast.url + "/files/f/changing", timeout=10).status_code == 404


def test_pipelined_requests_on_the_front(servers):
    fast, _ = servers
    requests.get(fast.url + "/files/f/small", timeout=10)
    port = int(fast.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /files/f/small HTTP/1.1\r\nHost: x\r\n\r\n" * 3 +
                  b"GET /files/f/missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3 and data.count(b"HTTP/1.1 404") == 1
    assert data.count(FILES["/f/small"]) == 3


def _status_of_raw(url, request):
    """The status code of the answer to the raw ``request`` (read until the server closes), or None."""
    data = raw_bytes(url, request)
    return int(data.split(b" ", 2)[1]) if data else None


@pytest.mark.parametrize("request_bytes", [
    b"GET /files/f/small HTTP/1.1\r\n\r\n",
    b"GET /files/f/missing HTTP/1.1\r\n\r\n",
    b"GET /files/f/small HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"HEAD /files/f/small HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET /files/f/small HTTP/1.0\r\n\r\n",
])
def test_host_header_checked_like_tornado(servers, request_bytes):
    fast, full = servers
    requests.get(fast.url + "/files/f/small", timeout=10)  # cached
    assert _status_of_raw(fast.url, request_bytes) == _status_of_raw(full.url, request_bytes) is not None
    assert "Traceback" not in fast.service.log_tail(200000)
