"""The fallback's own HTTP/1.1 reader (filetracker.server.oldserver.OldServer, shared by the gateway and filetracker-server) against a real
in-process Tornado server: Content-Length, chunked and close-delimited bodies, gzip, a body
cut short, a stalled server.  No 2.x server needed."""

import asyncio
import gzip
import socket

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.tcpclient import TCPClient

from filetracker.server.oldserver import OldServer, OldServerError, logical_size, version_of
from filetracker.server.oldserver import PlainDecoder as _Decoder

DATA = bytes(range(256)) * 3000  # 768000 bytes


class Files(web.RequestHandler):
    def head(self, name):
        self.set_header("Content-Length", "12345")  # a HEAD answer announces a body it does not send
        self.set_header("Last-Modified", "Tue, 14 Jul 2017 02:40:00 -0000")

    async def get(self, name):
        if name == "/chunked":
            for i in range(0, len(DATA), 100000):
                self.write(DATA[i:i + 100000])
                await self.flush()  # no Content-Length: Tornado sends it chunked
        elif name == "/auth":
            self.write(self.request.headers.get("Authorization", "none"))
        elif name == "/gzip":
            body = gzip.compress(DATA, 1)
            self.set_header("Content-Encoding", "gzip")
            self.set_header("Logical-Size", str(len(DATA)))
            self.set_header("Last-Modified", "Tue, 14 Jul 2017 02:40:00 -0000")
            self.write(body)
        elif name == "/short":
            self.set_header("Content-Length", str(len(DATA)))
            self.write(DATA[:1000])
            await self.flush()
            self.request.connection.stream.close()
        elif name == "/stall":
            self.set_header("Content-Length", "10")
            self.write(b"12345")
            await self.flush()
            await asyncio.sleep(3)
            self.write(b"67890")
        else:
            self.set_status(404)


def serve():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = HTTPServer(web.Application([(r"/files(/.*)", Files)]))
    server.add_sockets([sock])
    return server, "http://127.0.0.1:%d" % sock.getsockname()[1]


async def read_all(old, name):
    resp = await old.request("GET", name)
    try:
        decoder = _Decoder(resp.headers)
        out = bytearray()
        async for raw in resp.body():
            for piece in decoder.feed(raw):
                out += piece
        decoder.close()
        return resp, bytes(out)
    finally:
        resp.close()


def run(coro_fn):
    async def main():
        server, url = serve()
        try:
            return await coro_fn(url)
        finally:
            server.stop()
    return asyncio.run(main())


def test_bodies_of_every_framing():
    async def go(url):
        old = OldServer(TCPClient(), url, timeout=5)
        resp, data = await read_all(old, "/chunked")
        assert resp.code == 200 and resp.headers["Transfer-Encoding"] == "chunked" and data == DATA
        resp, data = await read_all(old, "/gzip")
        assert data == DATA and logical_size(resp.headers) == len(DATA)
        assert version_of(resp.headers) == 1500000000
        resp, data = await read_all(old, "/missing")
        assert resp.code == 404
        authed = OldServer(TCPClient(), url.replace("http://", "http://user:t%40ken@"), timeout=5)
        resp, data = await read_all(authed, "/auth")
        assert data == b"Basic dXNlcjp0QGtlbg=="  # user:t@ken
        resp = await old.request("HEAD", "/gzip")
        assert [chunk async for chunk in resp.body()] == []
        resp.close()
        assert resp.code == 200 and version_of(resp.headers) == 1500000000
    run(go)


def test_short_and_stalled_bodies_are_errors():
    async def go(url):
        old = OldServer(TCPClient(), url, timeout=1)
        with pytest.raises(OldServerError, match="mid-body"):
            await read_all(old, "/short")
        with pytest.raises(OldServerError, match="stalled"):
            await read_all(old, "/stall")
    run(go)


def test_unreachable_and_bad_urls():
    async def go(url):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        old = OldServer(TCPClient(), "http://127.0.0.1:%d" % port, timeout=1)
        with pytest.raises(OldServerError, match="cannot connect"):
            await old.request("GET", "/x")
    run(go)
    with pytest.raises(ValueError):
        OldServer(None, "ftp://host/", timeout=1)


def test_a_highly_compressed_chunk_is_decoded_piece_by_piece():
    """256 MiB of zeros gzip to about 256 KiB, one read from the old server: the decoder hands
    it over in pieces of at most 1 MiB as they are taken, never decoded whole in memory."""
    bomb = gzip.compress(b"\0" * (256 << 20), compresslevel=9)
    assert len(bomb) < 300 * 1024
    pieces = _Decoder({"Content-Encoding": "gzip"}).feed(bomb)
    first = next(pieces)
    assert 0 < len(first) <= 1 << 20
    total = len(first) + sum(len(p) for p in pieces)
    assert total == 256 << 20


def test_a_corrupt_gzip_chunk_is_an_old_server_error_when_taken():
    decoder = _Decoder({"Content-Encoding": "gzip"})
    with pytest.raises(OldServerError, match="corrupt gzip"):
        list(decoder.feed(b"\x1f\x8b\x08\x00garbage-that-is-not-deflate"))
    assert list(_Decoder({}).feed(b"")) == [] and list(_Decoder({}).feed(b"ab")) == [b"ab"]
