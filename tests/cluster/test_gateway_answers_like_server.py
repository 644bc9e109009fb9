"""The gateway answers the public protocol exactly as the single server does: the same status,
``Content-Type``, ``Last-Modified``, body and ``X-Exception`` for the same requests (real
processes: one ``filetracker-server``, and a gateway over 3 nodes, both batched and streamed
PUTs)."""

import gzip
import hashlib
import os
import socket
import subprocess
import time
from urllib.parse import quote, urlsplit

import pytest
import requests

from filetracker.client import Client
from filetracker.errors import ContentConflictError
from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date
from tests.server.conftest import start_server
from tests.support.procs import script
from tests.support.rawhttp import status_line

V = BASE_VERSION
BODY = b"parity\n" * 10
SHA_LOW = hashlib.sha256(b"\x00low").hexdigest()
# two large contents (streamed by the gateway and by the nodes: above both one-hop sizes) as the
# tie-break orders them: (loser, winner)
LARGE_LOSER, LARGE_WINNER = sorted((b"A" * 300_000, b"B" * 300_000), key=lambda d: hashlib.sha256(d).hexdigest())


def _put(version, data=BODY, **headers):
    return ("PUT", {"last_modified": http_date(version)}, data, headers)


def _delete(version):
    return ("DELETE", {"last_modified": http_date(version)}, None, {})


# (id, requests made in order on a fresh name; the answer of each is compared)
SEQUENCES = [
    ("put-new", [_put(V)]),
    ("put-older", [_put(V), _put(V - 5)]),
    ("put-same-again", [_put(V), _put(V)]),
    # at an equal version the larger SHA-256 wins (0x6131... < 0xf9c8...)
    ("put-equal-version-winning", [_put(V, b"\x00low"), _put(V, b"\xffhigh")]),
    ("put-equal-version-losing", [_put(V, b"\xffhigh"), _put(V, b"\x00low", **{"SHA256-Checksum": SHA_LOW})]),
    # without a checksum the gateway answered "stored" (the server hashes the body itself)
    ("put-equal-version-losing-unannounced", [_put(V, b"\xffhigh"), _put(V, b"\x00low")]),
    ("put-equal-version-losing-unannounced-gzip",
     [_put(V, b"\xffhigh"), _put(V, gzip.compress(b"\x00low"), **{"Content-Encoding": "gzip"})]),
    ("put-equal-version-losing-unannounced-large", [_put(V, LARGE_WINNER), _put(V, LARGE_LOSER)]),
    ("put-equal-version-winning-unannounced-large", [_put(V, LARGE_LOSER), _put(V, LARGE_WINNER)]),
    ("put-newer", [_put(V), _put(V + 5, b"newer")]),
    ("put-gzip", [_put(V, gzip.compress(BODY), **{"Content-Encoding": "gzip", "Logical-Size": str(len(BODY))})]),
    ("delete", [_put(V), _delete(V + 1)]),
    ("delete-older", [_put(V), _delete(V - 1)]),
    ("delete-missing", [_delete(V)]),
    ("delete-twice", [_put(V), _delete(V + 1), _delete(V + 2)]),
    ("get-missing", [("GET", {}, None, {})]),
    ("head-missing", [("HEAD", {}, None, {})]),
    ("get-deleted", [_put(V), _delete(V + 1), ("GET", {}, None, {})]),
    ("put-after-delete-same-second", [_put(V), _delete(V + 1), _put(V + 1)]),
    ("put-after-delete-older", [_put(V), _delete(V + 1), _put(V - 1)]),
    ("put-after-delete-later", [_put(V), _delete(V + 1), _put(V + 2)]),
    ("bad-checksum", [_put(V, **{"SHA256-Checksum": "0" * 64})]),
    ("bad-checksum-large", [_put(V, b"L" * 300_000, **{"SHA256-Checksum": "0" * 64})]),
    ("bad-size", [_put(V, gzip.compress(BODY), **{"Content-Encoding": "gzip", "Logical-Size": "3"})]),
    ("bad-gzip", [_put(V, b"\x1f\x8b\x08\x00garbage" * 8, **{"Content-Encoding": "gzip"})]),
    ("unknown-encoding", [_put(V, **{"Content-Encoding": "br"})]),
    ("good-checksum", [_put(V, **{"SHA256-Checksum": hashlib.sha256(BODY).hexdigest()})]),
]


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("parity-server"))
    cluster = TestCluster(tmp_path_factory.mktemp("parity-cluster"), nodes=3).start()
    try:
        streamed = cluster.start_gateway(["--no-batch-writes"])
        yield {"server": server.url, "gateway": cluster.gw, "gateway-streamed": streamed}
    finally:
        cluster.stop()
        server.stop()


def _answer(r, name):
    """What is compared of an answer (the name, one per system, shown as NAME)."""
    return (r.status_code, r.headers.get("Content-Type"), r.headers.get("Last-Modified"),
            r.headers.get("SHA256-Checksum"), r.content.replace(name.encode(), b"NAME"), (r.headers.get("X-Exception") or "").replace(name, "NAME"))


@pytest.mark.parametrize("case", SEQUENCES, ids=[c[0] for c in SEQUENCES])
def test_gateway_answers_like_the_server(systems, case):
    case_id, steps = case
    answers = {}
    for system, url in systems.items():
        name = "/parity/%s/%s" % (system, case_id)   # the two gateways share their nodes
        answers[system] = []
        for method, params, data, headers in steps:
            r = requests.request(method, url + "/files" + name, params=params, data=data, headers=headers,
                                 timeout=30)
            answers[system].append(_answer(r, name))
    assert answers["gateway"] == answers["server"]
    assert answers["gateway-streamed"] == answers["server"]


def test_losing_upload_of_an_equal_version_is_told_so(systems):
    """Two contents at one version (a re-upload within the same second): the one that loses the
    fixed tie-break is told it was not stored and why, not "a newer version is stored"."""
    first, second = dict(SEQUENCES)["put-equal-version-losing"]
    for system, url in systems.items():
        name = "/parity/%s/tie-told" % system
        method, params, data, headers = first
        assert requests.request(method, url + "/files" + name, params=params, data=data, headers=headers,
                                timeout=30).text == "stored\n"
        method, params, data, headers = second
        r = requests.request(method, url + "/files" + name, params=params, data=data, headers=headers, timeout=30)
        assert (r.status_code, r.text) == (200, "another content of this version is stored (equal versions go "
                                                "by content); not stored: upload again with a later version\n"), system
        assert requests.get(url + "/files" + name, timeout=30).content == b"\xffhigh"


def test_the_client_that_loses_an_equal_version_tie_is_told(systems, tmp_path):
    """Client.put_file of a content that lost the tie returned the name as if stored and cached the
    loser's content under it, so that client kept reading its own bytes for a version that holds
    another content.  The PUT answer now names the stored content (``SHA256-Checksum``): the
    client raises VersionConflictError and caches nothing; the FUSE writer goes a version up."""
    high, low = tmp_path / "high", tmp_path / "low"
    high.write_bytes(b"\xffhigh")
    low.write_bytes(b"\x00low")
    for system, url in systems.items():
        name = "/parity/%s/tie-client@%d" % (system, V)
        winner = Client(cache_dir=str(tmp_path / system / "a"), remote_url=url)
        loser = Client(cache_dir=str(tmp_path / system / "b"), remote_url=url)
        assert winner.put_file(name, str(high)) == name
        assert winner.put_file(name, str(high)) == name          # the same content again: stored
        with pytest.raises(ContentConflictError, match="another content of version %d is stored" % V):
            loser.put_file(name, str(low))
        assert loser.list_local_files() == []
        loser.get_file(name, str(tmp_path / system / "got"))
        assert (tmp_path / system / "got").read_bytes() == b"\xffhigh", system
        shell = subprocess.run([script("filetracker"), "-r", url, "put", str(low), name], capture_output=True,
                               timeout=60, env=dict(os.environ, FILETRACKER_DIR=str(tmp_path / system / "c")))
        assert shell.returncode == 1 and b"another content of version" in shell.stderr, (system, shell)


def test_without_a_version_the_loser_of_the_tie_goes_a_second_later(systems, tmp_path, monkeypatch):
    """A put without a version is "now" (2.x keeps the last upload of a second): losing the tie to
    another content of that second must not raise, as no version was asked for (found by a review);
    the upload is made again at the next second."""
    high, low = tmp_path / "high", tmp_path / "low"
    high.write_bytes(b"\xffhigh")
    low.write_bytes(b"\x00low")
    monkeypatch.setattr(time, "time", lambda: float(V))   # both uploads in the same second
    for system, url in systems.items():
        name = "/parity/%s/tie-implicit" % system
        winner = Client(cache_dir=str(tmp_path / system / "a"), remote_url=url)
        loser = Client(cache_dir=str(tmp_path / system / "b"), remote_url=url)
        assert winner.put_file(name, str(high)) == "%s@%d" % (name, V)
        assert loser.put_file(name, str(low)) == "%s@%d" % (name, V + 1)
        assert loser.remote_store.add_file(name + "x", str(high)) == "%sx@%d" % (name, V)
        assert loser.remote_store.add_file(name + "x", str(low)) == "%sx@%d" % (name, V + 1)
        assert requests.get(url + "/files" + name, timeout=30).content == b"\x00low", system


@pytest.mark.parametrize("path", ["/version/", "/version", "/list/", "/list/parity", "/list/nothing-here"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_version_and_list_answer_get_and_head(systems, method, path):
    """HEAD of ``/version/`` and ``/list/`` answers as GET does, without the body (405 before)."""
    got = {}
    for system, url in systems.items():
        r = requests.request(method, url + path, timeout=30)
        got[system] = (r.status_code, r.headers.get("Content-Type"), r.content if method == "HEAD" else None)
    assert got["server"][0] == 200 and got["server"][2] in (None, b"")
    assert got["gateway"] == got["server"] and got["gateway-streamed"] == got["server"]


def _first_answer(url, head, timeout=10):
    """Send only a request's head; the status line of the first answer (the body never sent)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head)
        return status_line(sock)


@pytest.mark.parametrize("headers,status", [
    ({"SHA256-Checksum": "zz"}, "400"),
    ({"Content-Encoding": "br"}, "415"),
    ({"Logical-Size": "-3"}, "400"),
    ({"Content-Encoding": "gzip", "Logical-Size": "x"}, "400"),
], ids=["checksum", "encoding", "size", "gzip-size"])
def test_bad_body_headers_are_refused_before_the_body(systems, headers, status):
    """With ``Expect: 100-continue`` a PUT whose body headers are malformed is refused at once,
    as the server refuses it; the gateway said "100 Continue", took the whole body (50 MB in
    a review's run) and refused it only then."""
    for system, url in systems.items():
        name = "/parity/%s/expect" % system
        head = ("PUT /files%s?last_modified=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n"
                "Expect: 100-continue\r\n%s\r\n" % (name, quote(http_date(V)),
                                                    "".join("%s: %s\r\n" % kv for kv in headers.items())))
        line = _first_answer(url, head.encode())
        assert line.startswith("HTTP/1.1 " + status), (system, line)
