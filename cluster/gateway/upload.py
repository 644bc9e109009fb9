"""One streamed upload to one node: ``PUT /_cluster/files/<name>?version=V``.

The gateway copies a client's body to several nodes at once without holding
it.  Each :class:`ReplicaUpload` owns a raw HTTP/1.1 connection (Tornado's
``HTTP1Connection`` in client mode) so that

* the connection is made and the request head sent *before* the client's body
  is read (:meth:`ReplicaUpload.open`), so a refused node can be replaced by a
  handoff node before any byte flows;
* the body goes through a small bounded queue (:meth:`feed` awaits when it is
  full, which throttles the client), so memory per upload stays bounded;
* a node that stalls longer than the timeout is cut off (:meth:`abort` closes
  the socket) instead of holding the upload or a connection for ever.
"""

import asyncio
import logging
import time
from urllib.parse import urlsplit

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters

from cluster.gateway.nodes import EPOCH_HEADER, quote_name, record_from_headers

log = logging.getLogger(__name__)

#: chunks buffered per target; Tornado reads request bodies in 64 KiB chunks,
#: so this bounds an upload to about 1 MiB per target
QUEUE_CHUNKS = 16
#: after the last byte a node must fsync and commit: allow this rate on top of the timeout
SLOWEST_COMMIT_BYTES_PER_S = 20 * 1024 * 1024
_END = object()


class ReplicaUpload(httputil.HTTPMessageDelegate):
    """A streamed PUT of one replica to ``node``, optionally as a hint for ``hint_for``.

    ``tcp`` is a shared :class:`tornado.tcpclient.TCPClient`.  Life cycle: ``await open()``; ``start()``; ``await feed(chunk)`` ... ;
    ``await end()``; ``await task`` -> self (``code``, ``record``, ``reason``).
    """

    def __init__(self, tcp, node, hint_for, name, version, headers, timeout, observer):
        self._tcp = tcp
        self.node = node
        self.hint_for = hint_for
        self.name = name
        self.version = version
        self.timeout = timeout
        self._observer = observer
        self._headers = dict(headers)
        if hint_for:
            self._headers["X-Hint-For"] = hint_for
        self._queue = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        self._stream = None
        self._conn = None
        self._sent = 0
        self._resp_body = []
        self.task = None
        self.failed = None      # reason when the upload is dead
        self.code = None        # the node's status code
        self.resp_headers = {}
        self.record = None      # the winner the node reports

    # ---- request side -----------------------------------------------------------

    async def open(self):
        """Connect and send the request head; raises on refusal or timeout."""
        parts = urlsplit(self.node.url)
        host, port = parts.hostname, parts.port or 80
        self._stream = await asyncio.wait_for(self._tcp.connect(host, port), self.timeout)
        self._stream.set_nodelay(True)
        self._conn = HTTP1Connection(self._stream, True, HTTP1ConnectionParameters(
            no_keep_alive=True, max_body_size=1 << 20, decompress=False))
        path = "/_cluster/files%s?version=%d" % (quote_name(self.name), self.version)
        headers = httputil.HTTPHeaders(self._headers)
        headers["Host"] = parts.netloc
        headers["Connection"] = "close"
        start = httputil.RequestStartLine("PUT", path, "HTTP/1.1")
        await asyncio.wait_for(self._conn.write_headers(start, headers), self.timeout)

    def start(self):
        self.task = asyncio.ensure_future(self._pump())
        return self.task

    async def feed(self, chunk):
        """Queue ``chunk`` for this node; False when the node is (now) out.

        Waits while the queue is full; a node that takes no data for
        ``timeout`` seconds is cut off and reported as failed.
        """
        if self.failed:
            return False
        if not self._queue.full():
            self._queue.put_nowait(chunk)
            return True
        try:
            await asyncio.wait_for(self._queue.put(chunk), self.timeout)
        except TimeoutError:
            self._observer.node_failed(self.node.url)
            self.abort("stalled for %.1fs while receiving the body" % self.timeout)
            return False
        return not self.failed

    async def end(self):
        """No more body: let the pump finish the request and read the answer."""
        await self.feed(_END)

    def abort(self, reason):
        """Give up on this node: close the socket, release anyone waiting to feed."""
        if self.failed is None:
            self.failed = reason
        if self._stream is not None:
            self._stream.close()
        while not self._queue.empty():
            self._queue.get_nowait()
        # wake the pump if it waits for a chunk: it sees ``failed`` and returns
        self._queue.put_nowait(_END)

    async def _pump(self):
        try:
            while True:
                chunk = await self._queue.get()
                if self.failed:
                    return self
                if chunk is _END:
                    break
                self._sent += len(chunk)
                await self._conn.write(chunk)
                if self._stream.closed():
                    raise ConnectionError("connection closed while sending")
            self._conn.finish()
            wait = self.timeout + self._sent / SLOWEST_COMMIT_BYTES_PER_S
            started = time.monotonic()
            await asyncio.wait_for(self._conn.read_response(self), wait)
            if self.code is None:
                raise ConnectionError("no answer after %.1fs" % (time.monotonic() - started))
        except TimeoutError:
            self._observer.node_failed(self.node.url)
            self.abort("no answer within the timeout")
        except Exception as exc:  # noqa: BLE001 - any failure just takes this replica out
            if self.code is None:
                await self._salvage_answer()
            if self.code is None:
                self._observer.node_failed(self.node.url)
                self.abort("%s: %s" % (type(exc).__name__, exc))
        finally:
            if self._stream is not None:
                self._stream.close()
        return self

    async def _salvage_answer(self):
        """A node may answer (e.g. 507, 400) and close before taking the whole body."""
        try:
            await asyncio.wait_for(self._conn.read_response(self), 1.0)
        except Exception:  # noqa: BLE001 - nothing to salvage
            pass

    # ---- response side (HTTPMessageDelegate) ----------------------------------------

    def headers_received(self, start_line, headers):
        self.code = start_line.code
        self.resp_headers = headers
        epoch = headers.get(EPOCH_HEADER)
        if epoch:
            try:
                self._observer.epoch_seen(int(epoch), self.node.url)
            except ValueError:
                pass

    def data_received(self, chunk):
        if sum(map(len, self._resp_body)) < 4096:
            self._resp_body.append(chunk)

    def finish(self):
        if self.code == 200:
            self.record = record_from_headers(self.name, self.resp_headers)

    def on_connection_close(self):
        pass

    @property
    def ok(self):
        return self.code == 200 and self.record is not None and not self.failed

    def reason(self):
        if self.code is not None and self.code != 200:
            return "%s: %d %s" % (self.node.url, self.code, self.resp_headers.get("X-Exception", ""))
        return "%s: %s" % (self.node.url, self.failed or "no answer")
