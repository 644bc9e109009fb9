"""Streamed PUT bodies written in batches (filetracker/server/upload_body.py).

A body is gathered into :data:`WRITE_BATCH` pieces, one written while the next
is received.  The stored bytes are exactly the body's at every size around
the batch boundary (plain and gzip); a client that leaves with a write in
flight, and a disk that fills in the middle of a body, leave no temp file;
a full disk answers 507 with a message.  A client leaving just as its body
ends never has its upload used by two threads (in process, with injected
delays); past the process's upload memory every piece is written as it comes.
The node's reserve (``--min-free-bytes``) during a streamed body is checked in
``tests/faults/test_full_disk.py``.
"""

import asyncio
import contextlib
import email.utils
import gzip
import hashlib
import os
import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from filetracker.server import upload_body
from filetracker.server.app import BODY_CHUNK, ServerConfig, make_app, make_server
from filetracker.server.handlers import FileHandler
from filetracker.server.upload_body import WRITE_BATCH
from filetracker.server.upload_body import _write_pieces as write_pieces
from filetracker.storage.upload import Upload
from tests.server.conftest import start_server
from tests.support.procs import free_port
from tests.support.waiting import wait_until

LM = "last_modified=" + email.utils.formatdate(1700000000, usegmt=True).replace(" ", "%20").replace(",", "%2C")

SIZES = [0, 1, WRITE_BATCH - 1, WRITE_BATCH, WRITE_BATCH + 1, 3 * WRITE_BATCH + 12345]


@contextlib.asynccontextmanager
async def in_process_server(config, upload_memory=None):
    """``(app, port)``: the server application listening on 127.0.0.1 in this event loop."""
    app = make_app(config)
    if upload_memory is not None:
        app.ctx.upload_memory.limit = upload_memory
    server = make_server(app, config)
    port = free_port()
    server.listen(port, "127.0.0.1")
    try:
        yield app, port
    finally:
        server.stop()
        app.ctx.executor.shutdown(wait=True)


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


def test_client_leaving_as_its_body_ends_never_shares_the_upload(tmp_path, monkeypatch):
    """The client closes right after its whole body: before ``put()`` takes the upload (the
    disconnection drops it) or after (``put()`` owns it and stores it).  Either way no two
    threads use the upload at once, nothing partial is stored, no temp file stays.

    In process, with fault injection: every write of a batch takes 0.6 s (so one is in
    flight when the body ends) and ``put()`` starts 0.5 s late (so the disconnection can come
    first).  Each use of an upload (a write, the abort, the commit's finish) holds a lock
    of that upload taken without waiting: a second thread finding it held is a violation.
    """
    locks = {}              # id(upload) -> (upload, its lock)
    violations = []

    def exclusive(fn):
        def run(upload, *args, **kwargs):
            lock = locks.setdefault(id(upload), (upload, threading.Lock()))[1]
            if not lock.acquire(blocking=False):
                violations.append(fn.__name__)
                return fn(upload, *args, **kwargs)
            try:
                return fn(upload, *args, **kwargs)
            finally:
                lock.release()
        return run

    def slow_write(upload, pieces):
        time.sleep(0.6)
        write_pieces(upload, pieces)

    monkeypatch.setattr(upload_body, "_write_pieces", exclusive(slow_write))
    monkeypatch.setattr(Upload, "abort", exclusive(Upload.abort))
    monkeypatch.setattr(Upload, "finish", exclusive(Upload.finish))
    put = FileHandler.put

    async def late_put(self, *args):
        await asyncio.sleep(0.5)
        return await put(self, *args)

    monkeypatch.setattr(FileHandler, "put", late_put)
    body = os.urandom(WRITE_BATCH + WRITE_BATCH // 2)
    # seconds from the body's end to the close: before put() (0.5 s late) takes the upload,
    # while it waits for the write in flight (until 0.6 s), during its last write, after it
    delays = [0.0, 0.2, 0.53, 0.56, 0.8, 1.5]
    config = ServerConfig(dir=str(tmp_path / "store"), read_cache_bytes=0)

    async def main():
        async with in_process_server(config) as (app, port):
            for i, delay in enumerate(delays):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(("PUT /files/leave/f%d?%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                              % (i, LM, len(body))).encode() + body)
                await writer.drain()
                await asyncio.sleep(delay)
                writer.close()
            deadline = time.monotonic() + 15
            while os.listdir(os.path.join(config.dir, "tmp")) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)   # a put() that took its upload finishes its commit
            assert app.ctx.upload_memory.held == 0   # every gathered byte released
            return [await app.ctx.run(app.ctx.store.get_record, "/leave/f%d" % i) for i in range(len(delays))]

    records = asyncio.run(main())
    assert violations == []
    assert os.listdir(os.path.join(config.dir, "tmp")) == []
    whole = hashlib.sha256(body).hexdigest()
    for record in records:
        assert record is None or (record.sha256 == whole and record.size == len(body)), record
    # both orders happened: dropped before put() took the upload, and stored after
    assert records[0] is None and records[-1] is not None, records


@pytest.mark.parametrize("limit", [0, 3 * 65536])
def test_uploads_past_the_memory_limit_write_each_piece(tmp_path, limit):
    """With the process's upload memory used up every piece is written as it comes: the
    bodies are stored exactly, in pieces, and the memory held goes back to 0."""
    config = ServerConfig(dir=str(tmp_path / "store"), read_cache_bytes=0)
    bodies = [os.urandom(3 * WRITE_BATCH + 777) for _ in range(3)]
    writes = []

    def counted(upload, pieces):
        writes.append(sum(len(p) for p in pieces))
        write_pieces(upload, pieces)

    async def main():
        loop = asyncio.get_running_loop()
        async with in_process_server(config, upload_memory=limit) as (app, port):
            def put_all():
                with requests.Session() as s:
                    return [s.put("http://127.0.0.1:%d/files/mem/f%d?%s" % (port, i, LM), data=body,
                                  timeout=30).status_code for i, body in enumerate(bodies)]
            codes = await loop.run_in_executor(None, put_all)
            held = app.ctx.upload_memory.held
            stored = [await app.ctx.run(lambda n=i: app.ctx.store.open_record("/mem/f%d" % n)) for i in range(3)]
            contents = []
            for _record, f in stored:
                with f:
                    contents.append(f.read())
            return codes, held, contents

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upload_body, "_write_pieces", counted)
        codes, held, contents = asyncio.run(main())
    assert codes == [200, 200, 200] and held == 0
    assert contents == bodies
    assert max(writes) <= limit + BODY_CHUNK < WRITE_BATCH  # never a whole batch: the limit and a piece

