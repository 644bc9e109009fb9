"""Bodies sent with ``sendfile`` (``filetracker/server/zerocopy.py``), on a real filetracker-server.

* several large answers, whole and ranged, on one keep-alive connection: every
  byte right and the connection still in step afterwards (Tornado's
  Content-Length count agrees with what ``sendfile`` sent);
* a blob shorter than its record (cut on disk): the connection is closed
  before ``Content-Length`` bytes arrived, so no client takes the short body
  for a whole one, and the server goes on serving.
"""

import os
import socket

import requests

from filetracker.httpdate import format_version
from tests.server.conftest import start_server

V = 1_700_000_000
SIZE = 3 << 20  # far above zerocopy.MIN_BYTES and above one socket buffer


def _put(url, name, data):
    r = requests.put(url + "/files" + name, data=data, params={"last_modified": format_version(V)}, timeout=30)
    assert r.status_code == 200, r.text


def _connect(url):
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s, s.makefile("rb")


def _answer(f):
    """(status, headers, body) of one answer read from ``f``; the body is cut short when
    the server closed the connection early."""
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline().decode("latin-1").strip()
        if not line:
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers["content-length"]))
    return status, headers, body


def test_large_answers_on_one_keep_alive_connection(tmp_path):
    server = start_server(tmp_path)
    try:
        data = os.urandom(SIZE)
        _put(server.url, "/z/big", data)
        s, f = _connect(server.url)
        try:
            requests_ = [("", data), ("Range: bytes=100-2500000\r\n", data[100:2500001]),
                         ("Range: bytes=-70000\r\n", data[-70000:]), ("", data)]
            for extra, want in requests_:
                s.sendall(("GET /files/z/big HTTP/1.1\r\nHost: x\r\n%s\r\n" % extra).encode())
                status, headers, body = _answer(f)
                assert status == (206 if extra else 200)
                assert len(body) == len(want) and body == want
            s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")  # still in step
            status, _, body = _answer(f)
            assert status == 200 and b"protocol_versions" in body
        finally:
            f.close()
            s.close()
    finally:
        server.stop()


def test_blob_shorter_than_its_record_closes_the_connection(tmp_path):
    server = start_server(tmp_path)
    try:
        data = os.urandom(SIZE)
        _put(server.url, "/z/cut", data)
        _put(server.url, "/z/fine", b"fine")
        [blob] = [p for p in (os.path.join(root, name) for root, _, names in
                              os.walk(os.path.join(server.dir, "blobs")) for name in names)
                  if os.path.getsize(p) == SIZE]
        with open(blob, "r+b") as fh:
            fh.truncate(SIZE // 2)
        s, f = _connect(server.url)
        try:
            s.sendall(b"GET /files/z/cut HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = _answer(f)
            assert status == 200 and int(headers["content-length"]) == SIZE
            assert len(body) < SIZE  # closed early: a short read, never a complete-looking answer
            assert f.read(1) == b""
        finally:
            f.close()
            s.close()
        assert requests.get(server.url + "/files/z/fine", timeout=10).content == b"fine"
        assert "blob shorter than its record" in open(server.service.log_path).read()
    finally:
        server.stop()
