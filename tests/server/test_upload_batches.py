"""Streamed PUT bodies written in batches (filetracker/server/upload_body.py).

A body is gathered into :data:`WRITE_BATCH` pieces, one written while the next
is received.  The stored bytes are exactly the body's at every size around
the batch boundary (plain and gzip); a client that leaves with a write in
flight, and a disk that fills in the middle of a body, leave no temp file;
a full disk answers 507 with a message.
"""

import email.utils
import gzip
import os
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import requests

from filetracker.server.upload_body import WRITE_BATCH
from tests.server.conftest import start_server
from tests.support.waiting import wait_until

LM = "last_modified=" + email.utils.formatdate(1700000000, usegmt=True).replace(" ", "%20").replace(",", "%2C")

SIZES = [0, 1, WRITE_BATCH - 1, WRITE_BATCH, WRITE_BATCH + 1, 3 * WRITE_BATCH + 12345]


def _pieces(data, size=100_000):
    """A generator body: requests sends it chunked, in pieces that do not align with batches."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("size", SIZES)
def test_bodies_around_the_batch_size_are_stored_exactly(shared_server, size):
    data = os.urandom(size)
    url = shared_server.url + "/files/batches/plain%d?%s" % (size, LM)
    assert requests.put(url, data=data, timeout=30).status_code == 200
    assert requests.get(url.split("?")[0], timeout=30).content == data
    # the same bytes, gzip-encoded and chunked (no Content-Length)
    url = shared_server.url + "/files/batches/gzip%d?%s" % (size, LM)
    body = gzip.compress(data, compresslevel=1)
    r = requests.put(url, data=_pieces(body), headers={"Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 200, r.headers
    r = requests.get(url.split("?")[0], timeout=30)
    assert (gzip.decompress(r.content) if r.headers.get("Content-Encoding") == "gzip" else r.content) == data
    assert wait_until(lambda: shared_server.tmp_files() == [], 10)


@pytest.mark.parametrize("linger", [0.0, 0.5])
def test_client_leaving_with_a_write_in_flight_leaves_nothing(server, linger):
    """2.6 MB of a declared 8 MB: two batches went to the disk, the client closes meanwhile."""
    parts = urlsplit(server.url)
    name = "/cut/batches%d" % int(linger * 10)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    s.sendall(("PUT /files%s?%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % (name, LM, 8_000_000)).encode())
    sent = 0
    while sent < 2_600_000:
        s.sendall(os.urandom(100_000))
        sent += 100_000
    time.sleep(linger)
    s.close()
    assert wait_until(lambda: server.tmp_files() == [], 10)
    assert server.blob_files() == []
    assert requests.get(server.url + "/files" + name, timeout=5).status_code == 404
    r = requests.put(server.url + "/files" + name + "?" + LM, data=b"whole", timeout=5)
    assert r.status_code == 200


def test_disk_filling_mid_body_answers_507_and_leaves_nothing(tmp_path):
    """The server's folder on an 8 MiB tmpfs; a 24 MiB body fills it in a later batch."""
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data_dir)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    server = None
    try:
        server = start_server(tmp_path)
        body = os.urandom(24 << 20)
        # chunked: no Content-Length, so nothing can refuse it before the disk fills
        r = requests.put(server.url + "/files/full/big?" + LM, data=_pieces(body, 1 << 20), timeout=60)
        assert r.status_code == 507, (r.status_code, r.headers)
        assert "no space" in r.headers.get("X-Exception", ""), r.headers
        assert wait_until(lambda: server.tmp_files() == [], 10)
        assert requests.get(server.url + "/files/full/big", timeout=5).status_code == 404
        # the space came back with the temp file: a small write is stored
        r = requests.put(server.url + "/files/full/small?" + LM, data=b"fits", timeout=10)
        assert r.status_code == 200
        assert requests.get(server.url + "/files/full/small", timeout=5).content == b"fits"
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", str(data_dir)], check=False)
