"""One streamed upload to one node: ``PUT /_cluster/files/<name>?version=V``.

The gateway copies a client's body to several nodes at once without holding
it.  Each :class:`ReplicaUpload` uses one keep-alive connection of the
gateway's :class:`cluster.gateway.pool.NodePool` (reused by later requests
when the exchange ends cleanly, so a PUT costs no TCP handshake) so that

* the connection is made and the request head sent *before* the client's body
  is read (:meth:`ReplicaUpload.open`), so a refused node can be replaced by a
  handoff node before any byte flows;
* the body goes through a small bounded queue (:meth:`feed` awaits when it is
  full, which throttles the client), so memory per upload stays bounded;
* a node that stalls longer than the timeout is cut off (:meth:`abort` closes
  the socket) instead of holding the upload or a connection for ever;
* a node that answers before taking the whole body (400 bad checksum, 507 full)
  is heard: its answer is the result, and that connection is not reused;
* a body above :data:`EXPECT_MIN_BYTES` (or of unknown length) is announced
  with ``Expect: 100-continue``: the head goes out in :meth:`open` and
  :meth:`early_answer` tells a refusal (507 full, 503 busy) from the node's
  ``100 Continue`` before any body byte is read from the client, so the
  writer can replace a refusing owner by a handoff node.  Smaller bodies skip
  the round trip (the writer keeps a copy of them instead);
* a *reused* pooled connection that fails before any byte of the node's
  answer (the node closed it at that moment: idle close, restart) is retried
  once on a new connection before the node counts as failed: the head is sent
  again while no body byte went out (``Expect``), and a small body is sent
  again from the pieces this upload kept while on the reused connection.  The
  retried PUT is idempotent (same name and version).
"""

import asyncio
import logging
import time
from urllib.parse import urlsplit

from cluster.gateway.nodes import EPOCH_HEADER, quote_name, record_from_headers
from cluster.gateway.pool import ConnectionFailed
from cluster.peers import UPLOAD_SHA256_HEADER
from filetracker.server.app import BODY_CHUNK
from filetracker.server.futures import mark_retrieved

log = logging.getLogger(__name__)

#: chunks buffered per target; Tornado hands request bodies over in pieces of at most
#: ``filetracker.server.app.BODY_CHUNK`` (256 KiB) and the targets share the pieces, so
#: the queues hold about 2 MiB of an upload; with a piece and a transport buffer
#: (64 KiB) per target on top, an upload to 3 nodes holds at most about 3.3 MiB
QUEUE_CHUNKS = 8
#: after the last byte a node must fsync and commit: allow this rate on top of the timeout
SLOWEST_COMMIT_BYTES_PER_S = 20 * 1024 * 1024
#: bodies above this size (and chunked ones) ask the node first (``Expect: 100-continue``)
EXPECT_MIN_BYTES = 64 * 1024
#: how long to wait for ``100 Continue`` before sending the body anyway (a busy node answers late)
CONTINUE_WAIT = 1.0
_END = object()
#: what :meth:`ReplicaUpload.end` queues after the last chunk (for :meth:`ReplicaUpload.offer`)
END_OF_BODY = _END


def pieces(data, size=BODY_CHUNK):
    """``data`` in slices of at most ``size`` bytes (``data`` itself when small enough).

    The upload queues count pieces (:data:`QUEUE_CHUNKS`), so whoever feeds them
    bodies not read by Tornado (decoded gzip, ranges read from replicas) slices
    them here to keep the queues' memory what a client's upload costs.
    """
    if len(data) <= size:
        yield data
        return
    for i in range(0, len(data), size):
        yield data[i:i + size]


class ReplicaUpload:
    """A streamed PUT of one replica to ``node``, optionally as a hint for ``hint_for``.

    ``pool`` is the gateway's :class:`~cluster.gateway.pool.NodePool`.  Life cycle:
    ``await open()``; ``start()``; ``await feed(chunk)`` ... ; ``await end()``;
    ``await task`` -> self (``code``, ``record``, ``reason``).
    """

    def __init__(self, pool, node, hint_for, name, version, headers, timeout, observer):
        self._pool = pool
        self.node = node
        self.hint_for = hint_for
        self.name = name
        self.version = version
        self.timeout = timeout
        self._observer = observer
        self._headers = dict(headers)
        if hint_for:
            self._headers["X-Hint-For"] = hint_for
        parts = urlsplit(node.url)
        self._host, self._port, self._netloc = parts.hostname, parts.port or 80, parts.netloc
        self._chunked = "Content-Length" not in self._headers
        self._length = None if self._chunked else int(self._headers["Content-Length"])
        self.expect_continue = self._chunked or self._length > EXPECT_MIN_BYTES
        self._interim = None    # future of the node's 100 Continue
        self._queue = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        self._conn = None
        self._answer = None     # future of the node's answer (pool.Response)
        self._head = b""        # request head not yet sent
        self._sent = 0
        self._complete = False  # the whole body went out
        self._request = b""     # the request head, kept for one retry on a new connection
        self._replay = None     # body pieces taken so far, kept while a retry may need them
        self._ended = False     # the end of the body was taken from the queue
        self._retried = False
        self.task = None
        self.lagged = 0.0       # seconds this replica held the body back while W others took it
        # loop time the node was last seen keeping up: it took body bytes, or a chunk came with
        # nothing waiting for it (or the upload started)
        self.progressed = None
        self._stuck_since = None  # loop time the pump began waiting for the node to take bytes
        self.failed = None      # reason when the upload is dead
        self.code = None        # the node's status code
        self.resp_headers = {}
        self.record = None      # the winner the node reports
        self.sent_sha256 = ""   # the SHA-256 of the body as the node received it ("": not said)

    # ---- request side -----------------------------------------------------------

    async def open(self):
        """Get a connection and send the request head; raises on refusal or timeout."""
        self._conn = await asyncio.wait_for(self._pool.acquire(self._host, self._port), self.timeout)
        if self._conn.reused and not self.expect_continue:
            self._replay = []  # at most EXPECT_MIN_BYTES: smaller bodies never ask first
        lines = ["PUT /_cluster/files%s?version=%d HTTP/1.1" % (quote_name(self.name), self.version),
                 "Host: " + self._netloc]
        lines += ["%s: %s" % kv for kv in self._headers.items()]
        if self._chunked:
            lines.append("Transfer-Encoding: chunked")
        if self.expect_continue:
            lines.append("Expect: 100-continue")
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._send_head(self._request)

    def _send_head(self, head):
        self._answer = self._conn.expect()
        self._answer.add_done_callback(mark_retrieved)  # the pump reports a failure its own way
        if self.expect_continue:
            self._interim = self._conn.interim()
            self._conn.transport.write(head)
        else:
            # the head goes out with the first piece of the body (one send instead of two)
            self._head = head

    def _may_retry(self, exc):
        """True when ``exc`` hit a reused connection before the node took the request:
        no answer byte (no 100 Continue either), not a timeout, the body replayable."""
        conn = self._conn
        return (isinstance(exc, ConnectionFailed) and not self._retried and not self.failed
                and conn is not None and conn.reused and not conn.got_bytes and not conn.timed_out
                and (self._replay is not None if not self.expect_continue else self._sent == 0))

    async def _reopen(self):
        """The retry: a new connection (never an idle one), the head again, the body taken so far."""
        self._retried = True
        old, self._conn = self._conn, None
        old.close()
        log.info("PUT %s to %s: reused connection closed by the node, retrying on a new one",
                 self.name, self.node.url)
        self._conn = await asyncio.wait_for(self._pool.connect(self._host, self._port), self.timeout)
        self._send_head(self._request)
        if self._replay:
            head, self._head = self._head, b""
            self._conn.transport.write(head + b"".join(self._replay))
            self._sent = sum(len(c) for c in self._replay)  # a piece may have been taken but not sent
            if self._ended:
                self._complete = self._sent == self._length
        self._replay = None  # a fresh connection is not retried

    async def early_answer(self, wait=CONTINUE_WAIT):
        """After :meth:`open`: the node's final answer when it refused before asking for the body
        (``Expect: 100-continue``), else None: ``100 Continue`` came, the request does not ask,
        or ``wait`` seconds passed (the body is then sent anyway).  Raises when the connection failed.
        """
        if self._interim is None:
            return None
        await asyncio.wait({self._interim, self._answer}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        if self._answer.done():
            exc = self._answer.exception()
            if exc is not None and self._may_retry(exc):
                await self._reopen()
                return await self.early_answer(wait)
            resp = self._answer.result()  # raises ConnectionFailed when the node closed without answering
            self._answered(resp)
            return resp
        return None

    @property
    def silent(self):
        """The node was asked first (``Expect: 100-continue``) and has not said ``100 Continue``
        (nor anything else) yet: it may be frozen or overloaded."""
        return self._interim is not None and not self._interim.done() and not self._answer.done()

    def start(self):
        self.progressed = asyncio.get_running_loop().time()
        self.task = asyncio.ensure_future(self._pump())
        return self.task

    @property
    def answered(self):
        """The node answered already (before the end of the body: an error about the request)."""
        return self._answer is not None and self._answer.done()

    def taking(self, now, within):
        """Whether the node is taking the body: not failed, not answered early, and either
        caught up (nothing queued, the socket not full), or caught up when a chunk was last
        queued for it, or it took bytes, within ``within`` seconds.  A node that froze with
        chunks queued or a full socket is not."""
        if self.failed or self.answered:
            return False
        if self._queue.empty() and self._stuck_since is None:
            return True
        return self.progressed is not None and now - self.progressed < within

    async def feed(self, chunk):
        """Queue ``chunk`` for this node; False when the node is (now) out.

        Waits while the queue is full; a node that takes no data for
        ``timeout`` seconds is cut off and reported as failed.
        """
        if self.failed:
            return False
        if self.offer(chunk):
            return True
        try:
            await asyncio.wait_for(self._queue.put(chunk), self.timeout)
        except TimeoutError:
            self.abort("stalled for %.1fs while receiving the body" % self.timeout)
            self._observer.node_failed(self.node.url, "PUT " + self.failed)
            return False
        return not self.failed

    def offer(self, chunk):
        """Queue ``chunk`` if there is room right now; False when :meth:`feed` must wait."""
        if self._queue.full():
            return False
        if self._queue.empty() and self._stuck_since is None:
            # a chunk queued just now is not a backlog: the fast replicas are checked right after
            # the delivery a slow one held back, when their last bytes taken are as old as the
            # slow one's pace (so a node slower than PROGRESS_WINDOW was never dropped)
            self.progressed = asyncio.get_running_loop().time()
        self._queue.put_nowait(chunk)
        return True

    async def end(self):
        """No more body: let the pump finish the request and read the answer."""
        await self.feed(_END)

    def abort(self, reason):
        """Give up on this node: close the socket, release anyone waiting to feed."""
        if self.failed is None:
            self.failed = reason
        if self._conn is not None:
            self._conn.close()
        while not self._queue.empty():
            self._queue.get_nowait()
        # wake the pump if it waits for a chunk: it sees ``failed`` and returns
        self._queue.put_nowait(_END)

    async def _send_body(self):
        """Write queued chunks until the end; stops early when the node already answered."""
        transport = self._conn.transport
        while True:
            chunk = await self._queue.get()
            if self.failed:
                return
            if chunk is _END:
                self._ended = True
            elif self._replay is not None and chunk:
                # before any early return: a retry sends it (a copy only of a view, which may change)
                self._replay.append(chunk if isinstance(chunk, bytes) else bytes(chunk))
            head, self._head = self._head, b""
            if chunk is _END:
                if self._chunked:
                    if self._answer.done():
                        return  # an early answer cut the body short: the connection is spent
                    transport.write(head + b"0\r\n\r\n")
                elif head:
                    transport.write(head)
                # a small body is often answered before the end is even queued
                self._complete = self._chunked or self._sent == self._length
                return
            if self._answer.done():
                return
            if not chunk:
                if head:
                    self._head = head
                continue  # an empty chunk would end a chunked body
            self._sent += len(chunk)
            if self._chunked:
                transport.write(b"".join((head, b"%x\r\n" % len(chunk), chunk, b"\r\n")))
            else:
                transport.write(head + chunk if head else chunk)
            loop = asyncio.get_running_loop()
            if self._conn.paused():
                self._stuck_since = loop.time()
                try:
                    await asyncio.wait_for(self._conn.drain(), self.timeout)
                finally:
                    self._stuck_since = None
            elif self._conn.closed:
                raise ConnectionFailed("connection closed while sending")
            self.progressed = loop.time()

    async def _exchange(self):
        """Send the rest of the body and wait for the answer; None when cut off by :meth:`abort`."""
        if not self._ended:
            await self._send_body()
        if self.failed:
            return None
        wait = self.timeout + self._sent / SLOWEST_COMMIT_BYTES_PER_S
        started = time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(self._answer), wait)
        except TimeoutError:
            raise TimeoutError("no answer after %.1fs" % (time.monotonic() - started)) from None

    async def _pump(self):
        try:
            while True:
                try:
                    resp = await self._exchange()
                    break
                except ConnectionFailed as exc:
                    # with Expect the body may have started (no 100 in time): only early_answer retries
                    if self._replay is None or not self._may_retry(exc):
                        raise
                    await self._reopen()
            if resp is None:
                return self
            self._replay = None
            self._answered(resp)
        except TimeoutError:
            if not self.failed:
                self.abort("no answer within the timeout")
                self._observer.node_failed(self.node.url, "PUT " + self.failed)
        except Exception as exc:  # noqa: BLE001 - any failure just takes this replica out
            if self.failed:
                return self  # we cut it off ourselves (the client went away): not the node's fault
            # a node may answer (e.g. 507, 400) and close before taking the whole body
            if self._answer.done() and self._answer.exception() is None:
                self._answered(self._answer.result())
            else:
                self.abort("%s: %s" % (type(exc).__name__, exc))
                self._observer.node_failed(self.node.url, "PUT " + self.failed)
        finally:
            conn, self._conn = self._conn, None  # a later abort() must not touch a reused connection
            if conn is not None:
                if self._complete and self.code is not None and not self.failed:
                    self._pool.release(self._host, self._port, conn)
                else:
                    conn.close()
        return self

    # ---- response side ----------------------------------------------------------------

    def _answered(self, resp):
        self.code = resp.code
        self.resp_headers = resp.headers
        epoch = resp.headers.get(EPOCH_HEADER)
        if epoch:
            try:
                self._observer.epoch_seen(int(epoch), self.node.url)
            except ValueError:
                pass
        if self.code == 200:
            self.record = record_from_headers(self.name, resp.headers)
            self.sent_sha256 = resp.headers.get(UPLOAD_SHA256_HEADER, "").strip().lower()

    @property
    def ok(self):
        return self.code == 200 and self.record is not None and not self.failed

    def reason(self):
        if self.code is not None and self.code != 200:
            return "%s: %d %s" % (self.node.url, self.code, self.resp_headers.get("X-Exception", ""))
        return "%s: %s" % (self.node.url, self.failed or "no answer")
