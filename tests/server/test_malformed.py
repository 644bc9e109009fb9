"""Acceptance 4: malformed requests get a 4xx with X-Exception, never a 500,
and leave no file in tmp/ or blobs/; a client disconnect leaves nothing visible.

Requests are sent with http.client so that paths reach the server unnormalised
(``..`` raw) and headers are exactly what the case says.
"""

import email.utils
import gzip
import hashlib
import http.client
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

T0 = 1_732_400_000
LM = "last_modified=" + email.utils.formatdate(T0).replace(" ", "%20").replace(",", "%2C")
BODY = b"some content\n" * 100
GOOD_SHA = hashlib.sha256(BODY).hexdigest()
BAD_GZIP = b"\x1f\x8b\x08\x00garbage-not-deflate" * 10
TRUNCATED_GZIP = gzip.compress(BODY * 50)[:-40]


def raw(url, method, path, body=None, headers=None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None and "Content-Length" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("X-Exception"), resp.read()
    finally:
        conn.close()


CASES = [
    # (id, method, path, body, headers, expected status)
    ("dotdot-raw", "PUT", "/files/a/../b?" + LM, BODY, {}, 400),
    ("dotdot-encoded", "PUT", "/files/a/%2e%2e/b?" + LM, BODY, {}, 400),
    ("dotdot-encoded-slash", "PUT", "/files/a%2F..%2Fb?" + LM, BODY, {}, 400),
    ("dot-component", "PUT", "/files/a/./b?" + LM, BODY, {}, 400),
    ("root-name", "PUT", "/files/?" + LM, BODY, {}, 400),
    ("empty-component", "PUT", "/files/a//b?" + LM, BODY, {}, 400),
    ("trailing-slash", "PUT", "/files/a/b/?" + LM, BODY, {}, 400),
    ("nul-byte", "PUT", "/files/a%00b?" + LM, BODY, {}, 400),
    ("control-char", "PUT", "/files/a%0Ab?" + LM, BODY, {}, 400),
    ("bad-version-suffix", "PUT", "/files/a@xyz?" + LM, BODY, {}, 400),
    ("huge-version-suffix", "PUT", "/files/ok/f@%d" % 2 ** 63, BODY, {}, 400),
    ("huger-version-suffix", "DELETE", "/files/ok/f@%d" % 2 ** 70, None, {}, 400),
    # no HTTP date after year 9999: stored, such a version could never be answered (a 500 on every GET)
    ("version-after-year-9999", "PUT", "/files/ok/f@253402300800", BODY, {}, 400),
    # int() refuses over 4300 digits: a 500 (PUT, DELETE) or no answer at all (GET, fast path)
    ("version-suffix-5000-digits", "PUT", "/files/ok/f@" + "1" * 5000, BODY, {}, 400),
    ("delete-version-suffix-5000-digits", "DELETE", "/files/ok/f@" + "1" * 5000, None, {}, 400),
    ("get-version-suffix-5000-digits", "GET", "/files/ok/f@" + "1" * 5000, None, {}, 400),
    ("invalid-utf8", "PUT", "/files/a%ffb?" + LM, BODY, {}, 400),
    ("component-too-long", "PUT", "/files/" + "x" * 300 + "?" + LM, BODY, {}, 400),
    ("name-too-long", "PUT", "/files/" + "/".join(["y" * 200] * 6) + "?" + LM, BODY, {}, 400),
    ("missing-last-modified", "PUT", "/files/ok/missing-lm", BODY, {}, 400),
    ("garbage-last-modified", "PUT", "/files/ok/f?last_modified=yesterday", BODY, {}, 400),
    ("empty-last-modified", "PUT", "/files/ok/f?last_modified=", BODY, {}, 400),
    ("negative-last-modified", "PUT", "/files/ok/f?last_modified=Thu,%2001%20Jan%201900%2000:00:00%20-0000",
     BODY, {}, 400),
    ("garbage-last-modified-header", "PUT", "/files/ok/f", BODY, {"Last-Modified": "not a date"}, 400),
    ("wrong-checksum", "PUT", "/files/ok/f?" + LM, BODY, {"SHA256-Checksum": "0" * 64}, 400),
    ("malformed-checksum", "PUT", "/files/ok/f?" + LM, BODY, {"SHA256-Checksum": "xyz"}, 400),
    ("bad-gzip", "PUT", "/files/ok/f?" + LM, BAD_GZIP, {"Content-Encoding": "gzip"}, 400),
    ("truncated-gzip", "PUT", "/files/ok/f?" + LM, TRUNCATED_GZIP, {"Content-Encoding": "gzip"}, 400),
    ("empty-gzip", "PUT", "/files/ok/f?" + LM, b"", {"Content-Encoding": "gzip"}, 400),
    ("unknown-encoding", "PUT", "/files/ok/f?" + LM, BODY, {"Content-Encoding": "br"}, 415),
    ("logical-size-mismatch", "PUT", "/files/ok/f?" + LM, gzip.compress(BODY),
     {"Content-Encoding": "gzip", "Logical-Size": "5"}, 400),
    ("logical-size-garbage", "PUT", "/files/ok/f?" + LM, BODY, {"Logical-Size": "many"}, 400),
    ("logical-size-5000-digits", "PUT", "/files/ok/f?" + LM, BODY, {"Logical-Size": "9" * 5000}, 400),
    ("gzip-right-size-wrong-sha", "PUT", "/files/ok/f?" + LM, gzip.compress(BODY),
     {"Content-Encoding": "gzip", "Logical-Size": str(len(BODY)), "SHA256-Checksum": "f" * 64}, 400),
    ("content-length-5000-digits", "PUT", "/files/ok/f?" + LM, BODY, {"Content-Length": "9" * 5000}, 400),
    ("get-content-length-5000-digits", "GET", "/files/ok/existing", b"", {"Content-Length": "9" * 5000}, 400),
    ("huge-header", "PUT", "/files/ok/f?" + LM, BODY, {"X-Big": "h" * 100_000}, 431),
    ("delete-missing-version", "DELETE", "/files/ok/f", None, {}, 400),
    ("delete-bad-version", "DELETE", "/files/ok/f?last_modified=soon", None, {}, 400),
    ("delete-dotdot", "DELETE", "/files/a/%2E%2E/b?" + LM, None, {}, 400),
    ("get-dotdot", "GET", "/files/a/../etc/passwd", None, {}, 400),
    ("list-dotdot", "GET", "/list/a/../b", None, {}, 400),
    ("list-bad-version", "GET", "/list/ok?last_modified=nope", None, {}, 400),
    ("unknown-method", "FOO", "/files/ok/f", None, {}, 405),
    ("post-files", "POST", "/files/ok/f?" + LM, BODY, {}, 405),
    ("unknown-path", "GET", "/nothing/here", None, {}, 404),
    ("get-missing", "GET", "/files/ok/missing", None, {}, 404),
    ("range-past-end", "GET", "/files/ok/existing", None, {"Range": "bytes=9999-"}, 416),
    ("range-start-5000-digits", "GET", "/files/ok/existing", None, {"Range": "bytes=%s-" % ("1" * 5000)}, 416),
]


@pytest.fixture(scope="module")
def malformed_server(shared_server):
    r = requests.put(shared_server.url + "/files/ok/existing?" + LM, data=b"exists", timeout=5)
    assert r.status_code == 200
    return shared_server


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_request(malformed_server, case):
    _id, method, path, body, headers, expected = case
    blobs_before = malformed_server.blob_files()
    status, exc, text = raw(malformed_server.url, method, path, body, headers)
    assert status == expected, (status, exc, text)
    assert 400 <= status < 500
    assert exc and "\n" not in exc and "Traceback" not in text.decode("utf-8", "replace")
    # Nothing left behind.
    assert malformed_server.tmp_files() == []
    assert malformed_server.blob_files() == blobs_before
    assert requests.get(malformed_server.url + "/files/ok/f", timeout=5).status_code == 404


def test_the_last_version_an_http_date_carries_is_stored_and_answered(malformed_server):
    url = malformed_server.url + "/files/ok/year-9999"
    assert requests.put(url + "@253402300799", data=b"far", timeout=5).status_code == 200
    for method in (requests.get, requests.head):
        r = method(url, timeout=5)
        assert r.status_code == 200 and r.headers["Last-Modified"] == "Fri, 31 Dec 9999 23:59:59 -0000", r.headers


def test_at_least_22_cases():
    assert len(CASES) >= 22


def _wait_until(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _partial_upload(url, name, declared, sent, linger):
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = ("PUT /files%s?%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (name, LM, declared)).encode()
    s.sendall(head + b"p" * sent)
    time.sleep(linger)  # let the server write what it got into tmp/
    s.close()


@pytest.mark.parametrize("linger", [0.0, 0.5])
def test_truncated_body_and_disconnect_leave_nothing(server, linger):
    """Content-Length larger than the body, then the client closes the socket."""
    name = "/cut/f%d" % int(linger * 10)
    _partial_upload(server.url, name, declared=5_000_000, sent=300_000, linger=linger)
    assert _wait_until(lambda: server.tmp_files() == [])
    assert server.blob_files() == []
    assert requests.get(server.url + "/files" + name, timeout=5).status_code == 404
    assert requests.get(server.url + "/list/cut", timeout=5).text == ""
    # The server still works.
    r = requests.put(server.url + "/files" + name + "?" + LM, data=b"whole", timeout=5)
    assert r.status_code == 200
