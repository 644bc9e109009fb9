"""Issue 5, acceptance 2: a table of bad requests against a gateway over 3 nodes AND a node directly.

Every case must be answered with a 4xx (or 503/507 where that is right) carrying a
one-line ``X-Exception`` message, never a 500 or a traceback; afterwards no file
exists outside the data folders (path traversal), no temporary upload is left,
no blob was added, and the name is not readable (nothing partial).

The node is started with ``--allow-public-writes`` so that its own validation of
uploads is exercised (without it every PUT is a 403, see test_internal_api.py).
A few protocol-level cases that Tornado answers itself, before any handler runs
(so without ``X-Exception``), are in :data:`PROTOCOL_CASES` with a weaker check.
"""

import email.utils
import gzip
import hashlib
import os
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.security.conftest import start_gateway
from tests.security.support import files_under, raw, raw_bytes, wait_until
from tests.support.procs import ROOT

pytestmark = pytest.mark.security

T0 = 1_732_400_000
DATE = email.utils.formatdate(T0)
LM = "last_modified=" + DATE.replace(" ", "%20").replace(",", "%2C")
BODY = b"some content\n" * 100
SHA = hashlib.sha256(BODY).hexdigest()
GZ = gzip.compress(BODY)
BAD_GZIP = b"\x1f\x8b\x08\x00garbage-not-deflate" * 10
TRUNCATED_GZIP = gzip.compress(BODY * 50)[:-40]
ESCAPE = "escape-marker-7f3a"  # no file with this in its name may appear anywhere
F = "/files/bad/{id}"  # the name a body-level case tries to write (one per case, so failures do not cascade)

# (id, method, path, body, headers, allowed statuses)
CASES = [
    # ---- names and path traversal
    ("dotdot-raw", "PUT", "/files/a/../../%s?%s" % (ESCAPE, LM), BODY, {}, {400}),
    ("dotdot-leading", "PUT", "/files/../../../tmp/%s?%s" % (ESCAPE, LM), BODY, {}, {400}),
    ("dotdot-encoded", "PUT", "/files/a/%%2e%%2e/%%2e%%2e/%s?%s" % (ESCAPE, LM), BODY, {}, {400}),
    ("dotdot-encoded-slash", "PUT", "/files/a%%2F..%%2F..%%2F%s?%s" % (ESCAPE, LM), BODY, {}, {400}),
    ("dot-component", "PUT", "/files/a/./b?" + LM, BODY, {}, {400}),
    ("root-name", "PUT", "/files/?" + LM, BODY, {}, {400}),
    ("double-slash-absolute", "PUT", "/files//tmp/%s?%s" % (ESCAPE, LM), BODY, {}, {400}),
    ("trailing-slash", "PUT", "/files/a/b/?" + LM, BODY, {}, {400}),
    ("nul-byte", "PUT", "/files/a%00b?" + LM, BODY, {}, {400}),
    ("nul-byte-traversal", "PUT", "/files/bad/%s%%00/../x?%s" % (ESCAPE, LM), BODY, {}, {400}),
    ("newline-in-name", "PUT", "/files/a%0Ab?" + LM, BODY, {}, {400}),
    ("invalid-utf8", "PUT", "/files/a%ffb?" + LM, BODY, {}, {400}),
    ("bad-version-suffix", "PUT", "/files/a@xyz?" + LM, BODY, {}, {400}),
    ("negative-version-suffix", "PUT", "/files/a@-5?" + LM, BODY, {}, {400}),
    ("component-too-long", "PUT", "/files/" + "x" * 300 + "?" + LM, BODY, {}, {400}),
    ("name-too-long", "PUT", "/files/" + "/".join(["y" * 200] * 6) + "?" + LM, BODY, {}, {400}),
    ("uri-too-long", "PUT", "/files/" + "/".join(["z" * 250] * 80) + "?" + LM, BODY, {}, {414}),
    ("get-dotdot", "GET", "/files/a/../../../etc/passwd", None, {}, {400}),
    ("get-name-too-long", "GET", "/files/" + "g" * 2000, None, {}, {400}),
    ("head-nul", "HEAD", "/files/a%00", None, {}, {400}),
    ("list-dotdot", "GET", "/list/a/../..", None, {}, {400}),
    ("list-nul", "GET", "/list/a%00b", None, {}, {400}),
    ("delete-dotdot", "DELETE", "/files/a/%2E%2E/b?" + LM, None, {}, {400}),
    # ---- versions
    ("missing-last-modified", "PUT", F, BODY, {}, {400}),
    ("garbage-last-modified", "PUT", F + "?last_modified=yesterday", BODY, {}, {400}),
    ("empty-last-modified", "PUT", F + "?last_modified=", BODY, {}, {400}),
    ("version-after-year-9999", "PUT", F + "@253402300800", BODY, {}, {400}),
    ("delete-after-year-9999", "DELETE", F + "?last_modified=Sat,%2001%20Jan%2010000%2000:00:00%20-0000",
     None, {}, {400}),
    ("year-1900", "PUT", F + "?last_modified=Mon,%2001%20Jan%201900%2000:00:00%20-0000", BODY, {}, {400}),
    ("garbage-last-modified-header", "PUT", F, BODY, {"Last-Modified": "not a date"}, {400}),
    ("delete-missing-version", "DELETE", "/files/bad/existing", None, {}, {400}),
    ("delete-garbage-version", "DELETE", "/files/bad/existing?last_modified=soon", None, {}, {400}),
    ("list-garbage-version", "GET", "/list/bad?last_modified=nope", None, {}, {400}),
    # ---- checksums and encodings
    ("wrong-checksum", "PUT", F + "?" + LM, BODY, {"SHA256-Checksum": "0" * 64}, {400}),
    ("malformed-checksum", "PUT", F + "?" + LM, BODY, {"SHA256-Checksum": "xyz"}, {400}),
    ("short-checksum", "PUT", F + "?" + LM, BODY, {"SHA256-Checksum": SHA[:63]}, {400}),
    ("bad-gzip", "PUT", F + "?" + LM, BAD_GZIP, {"Content-Encoding": "gzip"}, {400}),
    ("truncated-gzip", "PUT", F + "?" + LM, TRUNCATED_GZIP, {"Content-Encoding": "gzip"}, {400}),
    ("empty-gzip", "PUT", F + "?" + LM, b"", {"Content-Encoding": "gzip"}, {400}),
    ("gzip-wrong-sha", "PUT", F + "?" + LM, GZ,
     {"Content-Encoding": "gzip", "Logical-Size": str(len(BODY)), "SHA256-Checksum": "f" * 64}, {400}),
    ("unknown-encoding", "PUT", F + "?" + LM, BODY, {"Content-Encoding": "br"}, {415}),
    ("two-encodings", "PUT", F + "?" + LM, GZ, {"Content-Encoding": "gzip, deflate"}, {415}),
    ("logical-size-mismatch", "PUT", F + "?" + LM, GZ, {"Content-Encoding": "gzip", "Logical-Size": "5"}, {400}),
    ("logical-size-garbage", "PUT", F + "?" + LM, BODY, {"Logical-Size": "many"}, {400}),
    ("logical-size-negative", "PUT", F + "?" + LM, BODY, {"Logical-Size": "-5"}, {400}),
    # ---- headers and sizes
    ("huge-header", "PUT", F + "?" + LM, BODY, {"X-Big": "h" * 100_000}, {431}),
    ("many-headers", "GET", "/files/bad/existing", None, {"X-H%04d" % i: "v" * 60 for i in range(1200)}, {431}),
    ("content-length-huge", "PUT", F + "?" + LM, BODY, {"Content-Length": str(1 << 50)}, {413}),
    ("content-length-garbage-header", "PUT", F + "?" + LM, BODY, {"Content-Length": "12abc"}, {400}),
    ("content-length-short-checksum", "PUT", F + "?" + LM, BODY,
     {"Content-Length": "5", "SHA256-Checksum": SHA}, {400}),
    # ---- methods and endpoints
    ("unknown-method", "FOO", "/files/bad/existing", None, {}, {405}),
    ("post-files", "POST", F + "?" + LM, BODY, {}, {405}),
    ("patch-files", "PATCH", F + "?" + LM, BODY, {}, {405}),
    ("put-list", "PUT", "/list/bad", BODY, {}, {405}),
    ("delete-version-endpoint", "DELETE", "/version/", None, {}, {405}),
    ("unknown-path", "GET", "/nothing/here", None, {}, {404}),
    ("get-missing", "GET", "/files/bad/missing", None, {}, {404}),
    ("delete-missing", "DELETE", "/files/bad/missing?" + LM, None, {}, {404}),
    # ---- ranges
    ("range-past-end", "GET", "/files/bad/existing", None, {"Range": "bytes=9999-"}, {416}),
    ("range-empty-suffix", "GET", "/files/bad/existing", None, {"Range": "bytes=-0"}, {416}),
]

# Malformed HTTP that Tornado refuses before a handler exists: a bare 400 (no X-Exception) or a
# closed connection, never a 500, nothing stored.  (raw request bytes, name that must stay absent)
PROTOCOL_CASES = [
    ("content-length-garbage", ("PUT %s?%s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nzzz" % (F, LM)).encode()),
    ("content-length-twice", ("PUT %s?%s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nzzzz"
                              % (F, LM)).encode()),
    ("bad-request-line", b"PUT\r\n\r\n"),
    ("bad-chunked-body", ("PUT %s?%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"
                          % (F, LM)).encode()),
]


class Target:
    """Where the cases go: a URL and the data folders that must stay clean."""

    def __init__(self, kind, url, dirs):
        self.kind = kind
        self.url = url
        self.dirs = dirs

    def tmp_files(self):
        return {(d, f) for d in self.dirs for f in files_under(os.path.join(d, "tmp"))}

    def blobs(self):
        return {(d, f) for d in self.dirs for f in files_under(os.path.join(d, "blobs"))}


@pytest.fixture(scope="module")
def gateway(nodes3, tmp_path_factory):
    g = start_gateway(nodes3, [], tmp_path_factory.mktemp("badinput"))
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module", params=["gateway", "node"])
def target(request, nodes3, gateway):
    if request.param == "gateway":
        t = Target("gateway", gateway.url, nodes3.dirs)
    else:
        t = Target("node", nodes3.urls[0], nodes3.dirs[:1])
    a = raw(t.url, "PUT", "/files/bad/existing?" + LM, b"exists")
    assert a.status == 200, a
    # the gateway answers after a quorum: let the last replica land before blobs are compared
    sha = hashlib.sha256(b"exists").hexdigest()
    assert wait_until(lambda: all(os.path.exists(os.path.join(d, "blobs", sha[:2], sha)) for d in t.dirs),
                      timeout=10)
    return t


def _no_escape(cluster):
    """Files named with ESCAPE: anywhere under the cluster's folder, or directly in one of its
    ancestors, the checkout or /tmp (where a ``..`` walk out of a data folder lands).  The
    ancestors are listed, not walked: the session's temporary folder holds every earlier
    test's files, and walking it cost a second per case.  (Not seen: a walk that goes up past
    the cluster's folder and then down into another existing folder than /tmp.)"""
    hits = [p for p in files_under(cluster.tmp) if ESCAPE in p]
    folder = os.path.abspath(cluster.tmp)
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        hits += [os.path.join(folder, p) for p in os.listdir(folder) if ESCAPE in p]
    hits += [p for p in os.listdir(ROOT) + os.listdir("/tmp") if ESCAPE in p]
    return hits


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(nodes3, target, case):
    case_id, method, path, body, headers, allowed = case
    path = path.replace("{id}", case_id)
    blobs_before = target.blobs()
    a = raw(target.url, method, path, body, headers)
    assert a.status in allowed, (target.kind, a)
    assert 400 <= a.status < 500 or a.status in (503, 507)
    msg = a.exception
    assert msg and "\n" not in msg and "Traceback" not in msg, a
    assert b"Traceback" not in a.body
    # nothing partial, nothing outside the data folders
    assert wait_until(lambda: not target.tmp_files()), target.tmp_files()
    assert target.blobs() == blobs_before
    assert raw(target.url, "GET", F.replace("{id}", case_id)).status == 404
    assert not _no_escape(nodes3)


@pytest.mark.parametrize("case", PROTOCOL_CASES, ids=[c[0] for c in PROTOCOL_CASES])
def test_malformed_http(target, case):
    case_id, data = case
    data = data.replace(b"{id}", case_id.encode())
    blobs_before = target.blobs()
    answer = raw_bytes(target.url, data)
    status_line = answer.split(b"\r\n", 1)[0]
    assert answer == b"" or status_line.split(b" ")[1:2] == [b"400"], answer[:300]
    assert wait_until(lambda: not target.tmp_files())
    assert target.blobs() == blobs_before
    assert raw(target.url, "GET", F.replace("{id}", case_id)).status == 404
    # the server is still fine
    assert raw(target.url, "GET", "/files/bad/existing").status == 200


def test_table_size():
    assert len(CASES) >= 40


@pytest.mark.parametrize("linger", [0.0, 0.4])
def test_truncated_upload_leaves_nothing(target, linger):
    """Content-Length larger than what is sent, then the client goes away."""
    name = "/bad/truncated-%d" % int(linger * 10)
    blobs_before = target.blobs()
    parts = urlsplit(target.url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    s.sendall(("PUT /files%s?%s HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n" % (name, LM)).encode()
              + b"p" * 200_000)
    time.sleep(linger)
    s.close()
    assert wait_until(lambda: not target.tmp_files()), target.tmp_files()
    assert target.blobs() == blobs_before
    assert raw(target.url, "GET", "/files" + name).status == 404
    assert raw(target.url, "GET", "/files/bad/existing").status == 200


def test_escape_check_sees_a_file_in_an_ancestor(nodes3):
    """The check above would see a file a ``..`` walk put beside the cluster's folder."""
    planted = os.path.join(os.path.dirname(os.path.abspath(nodes3.tmp)), "planted-" + ESCAPE)
    open(planted, "w").close()
    try:
        assert _no_escape(nodes3) == [planted]
    finally:
        os.remove(planted)
    assert not _no_escape(nodes3)
