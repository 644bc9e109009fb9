"""Helpers of the security tests: raw HTTP requests, folder snapshots, the targets.

Requests go out through :mod:`http.client` (or a bare socket) so that paths
reach the server unnormalised and headers are exactly what a case says.
"""

import base64
import http.client
import os
import socket
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

from tests.support.waiting import wait_until  # noqa: F401 - re-exported


class Answer:
    """Status, headers and body of one raw exchange (``status`` None: the connection was dropped)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def exception(self):
        return self.headers.get("X-Exception") if self.headers else None

    def __repr__(self):
        return "Answer(%r, X-Exception=%r, body=%r)" % (self.status, self.exception, self.body[:200])


def raw(url, method, path, body=None, headers=None, timeout=15):
    """One request with exactly these method/path/headers; a dropped connection gives status None."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, CaseInsensitiveDict(resp.getheaders()), data)
    except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
        return Answer(None, {}, b"")
    finally:
        conn.close()


def raw_bytes(url, data, read_timeout=10):
    """Send ``data`` as is on a new connection; return everything answered until close."""
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=read_timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def basic(user, token):
    return "Basic " + base64.b64encode(("%s:%s" % (user, token)).encode()).decode()


def files_under(root):
    """Relative paths of every file under ``root`` (empty when missing)."""
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(dirpath, f), root))
    return out
