"""A small keep-alive HTTP/1.1 client for the gateway's exchanges with nodes.

Why not libcurl or Tornado's client: the gateway talks only to our own nodes,
over loopback or a LAN, with small requests and answers; a profile of the
gateway under load showed most of its time in the generic clients' machinery.
This client is an :class:`asyncio.Protocol` per connection and a pool of idle
connections per node:

* a connection is reused as long as both sides keep it open; an idle one
  learns at once when the node closes it (``connection_lost``), so the pool
  rarely hands out a dead socket;
* when a *reused* connection fails before the first byte of the answer (the
  node closed it at the same moment), the request is sent again once on a new
  connection: every internal request is idempotent (merges, lookups, reads);
* every exchange is bounded by one timeout (connect + answer).

Answers: status line, headers (case-insensitive :class:`Headers`) and a body
delimited by ``Content-Length``, chunked encoding or the end of the connection.
:meth:`NodePool.stream` hands a successful answer's body over as it arrives
(:class:`BodyStream`, with flow control) instead of collecting it.
"""

import asyncio
import collections
import time

#: idle connections kept per node (beyond that they are closed)
MAX_IDLE = 64
#: an idle connection older than this is closed instead of reused (nodes close
#: idle connections after 300 s by default)
IDLE_SECONDS = 60.0
#: a streamed body stops reading from the node while this many bytes wait for the consumer
STREAM_HIGH_WATER = 4 << 20


class ConnectionFailed(Exception):
    """No (complete) answer: refused, reset, closed early or timed out."""


class Headers(dict):
    """Response headers, keys lower-cased; ``get`` and ``[]`` accept any case."""

    def get(self, key, default=None):
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key):
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key):
        return dict.__contains__(self, key.lower())


class Response:
    """``first_byte_at``: ``time.monotonic()`` when the answer's first byte arrived (its body's
    transfer excluded: what a node's delay is judged by, cluster/gateway/latency.py).  For a
    request sent with ``Expect: 100-continue`` it is the interim 100 answer's arrival."""

    __slots__ = ("code", "headers", "body", "first_byte_at")

    def __init__(self, code, headers, body, first_byte_at=0.0):
        self.code = code
        self.headers = headers
        self.body = body
        self.first_byte_at = first_byte_at


class BodyStream:
    """The body of a streamed answer (:meth:`NodePool.stream`), taken as it arrives.

    The connection stops reading (``pause_reading``) while
    :data:`STREAM_HIGH_WATER` bytes wait for the consumer, so memory stays
    bounded however slow the consumer is.  When the whole body arrived the
    connection goes back to the pool; :meth:`close` before that drops it.
    """

    def __init__(self, conn, length, on_end):
        self.length = length
        self._conn = conn
        self._on_end = on_end   # called once with the connection when the body is complete
        self._chunks = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter = None
        self._error = None
        self._complete = False
        self._closed = False
        #: the longest time the consumer held the node back (reading paused), in seconds: a
        #: node may give up on a reader that stopped for long (its send timeout), which is
        #: then no fault of the node's (a close is seen only once reading resumes)
        self.held_for = 0.0
        self._paused_at = 0.0

    # ---- fed by the connection -----------------------------------------------------

    def _push(self, data):
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= STREAM_HIGH_WATER and not self._paused:
            self._paused = True
            self._paused_at = time.monotonic()
            self._conn.transport.pause_reading()
        self._wake()

    def _end(self):
        self._complete = True
        if self._paused:  # nothing more to read: the connection goes back to the pool reading
            self._paused = False
            self._conn.transport.resume_reading()
        if not self._closed:
            self._on_end(self._conn)
        self._wake()

    def _fail(self, exc):
        if self._error is None:
            self._error = exc
            self._count_pause()
        self._wake()

    def _wake(self):
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    # ---- the consumer --------------------------------------------------------------

    async def take(self, timeout):
        """Every chunk received so far (a non-empty list), waiting up to ``timeout``
        seconds for one; ``[]`` once the whole body was taken.

        Raises :class:`ConnectionFailed` when the answer broke off, or when no
        byte came for ``timeout`` seconds (the connection is then dropped).
        """
        while not self._chunks:
            if self._complete:
                return []
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            timer = asyncio.get_running_loop().call_later(timeout, self._expire, timeout)
            try:
                await self._waiter
            finally:
                timer.cancel()
        chunks = list(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused:
            self._count_pause()
            self._paused = False
            if not self._conn.closed:
                self._conn.transport.resume_reading()
        return chunks

    def _count_pause(self):
        if self._paused:
            self.held_for = max(self.held_for, time.monotonic() - self._paused_at)

    def _expire(self, timeout):
        if self._complete or self._closed:  # the last bytes came in the same loop iteration
            return
        self._fail(ConnectionFailed("no bytes for %.1fs" % timeout))
        self._conn.close()

    def close(self):
        """The consumer is done: a body not received to its end drops the connection."""
        self._closed = True
        self._chunks.clear()
        if not self._complete:
            self._conn.close()


class _Conn(asyncio.Protocol):
    """One connection; at most one exchange at a time."""

    def __init__(self):
        self.transport = None
        self.closed = False
        self._drained = None   # a future while the transport's write buffer is full
        self.idle_since = 0.0
        self._buf = bytearray()
        self._waiter = None
        self._interim = None   # a future for the first 1xx answer (Expect: 100-continue)
        self._head_only = False
        self._state = None     # None (idle), "head", "body", "chunked", "eof"
        self._code = 0
        self._headers = None
        self._want = 0
        self._parts = []
        self.got_bytes = False
        self.first_byte_at = 0.0
        self.timed_out = False
        self.keep_alive = True
        self.reused = False    # handed out again from the idle pool (the node may have just closed it)
        self._streamed = None  # for a streamed exchange: on_end(conn), called when its body is complete
        self._body = None      # the BodyStream being fed (state "stream")

    # ---- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self._state is None:
            # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        if not self.got_bytes:
            self.got_bytes = True
            self.first_byte_at = time.monotonic()
        if self._state == "stream" and not self._buf:
            self._feed(data)
            return
        if self._state == "body" and not self._buf and len(data) < self._want:
            # the middle of a large body: keep the bytes object as it is (no copy)
            self._parts.append(data)
            self._want -= len(data)
            return
        self._buf += data
        try:
            self._parse()
        except ValueError as exc:
            self._fail(ConnectionFailed("bad answer: %s" % exc))
            self.close()

    def pause_writing(self):
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        d, self._drained = self._drained, None
        if d is not None and not d.done():
            d.set_result(None)

    def paused(self):
        """True while the transport's write buffer is over its high-water mark."""
        return self._drained is not None

    async def drain(self):
        """Wait until the kernel took the bytes written so far (flow control)."""
        if self.closed:
            raise ConnectionFailed("connection closed while sending")
        if self._drained is not None:
            await self._drained

    def connection_lost(self, exc):
        self.closed = True
        self.resume_writing()
        if self._state == "eof":
            self._parts.append(bytes(self._buf))
            self._buf.clear()
            self._done()
        elif self._state == "stream":
            self._state = None
            self._body._fail(ConnectionFailed("connection closed after %d of %d body bytes%s"
                                              % (self._body.length - self._want, self._body.length,
                                                 ": %s" % exc if exc else "")))
        elif self._state is not None:
            self._fail(ConnectionFailed("connection closed%s" % (": %s" % exc if exc else "")))

    # ---- exchange ----------------------------------------------------------------

    def send(self, data, head_only, streamed=None):
        """Write one request; the answer arrives on the returned future.

        With ``streamed`` (a callable taking this connection) a 2xx answer with
        a ``Content-Length`` body arrives as soon as its headers did, its body
        a :class:`BodyStream`; ``streamed(conn)`` is called when that body is
        complete (the connection is then free for the next exchange).
        """
        waiter = self.expect(head_only)
        self._streamed = streamed
        try:
            self.transport.write(data)
        except RuntimeError as exc:
            # uvloop refuses to write on a transport that closed before connection_lost
            # reached us (a node killed just now): a failed exchange like any other, so an
            # idle connection is retried on a new one
            self.closed = True
            self._fail(ConnectionFailed("connection closed: %s" % exc))
        return waiter

    def expect(self, head_only=False):
        """Prepare for the answer to a request about to be written (streamed uploads)."""
        self._streamed = None
        self._body = None
        self._interim = None
        self._waiter = asyncio.get_running_loop().create_future()
        self._head_only = head_only
        self._state = "head"
        self._parts = []
        self.got_bytes = False
        return self._waiter

    def interim(self):
        """A future set to the code of the first 1xx answer of the current exchange (100 Continue)."""
        if self._interim is None:
            self._interim = asyncio.get_running_loop().create_future()
        return self._interim

    def close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def expire(self, timeout):
        """The exchange took longer than ``timeout``: fail it and drop the connection."""
        self.timed_out = True
        self._fail(ConnectionFailed("no answer within %.1fs" % timeout))
        self.close()

    def _fail(self, exc):
        self._state = None
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)

    def _done(self):
        body = b"".join(self._parts) if len(self._parts) != 1 else self._parts[0]
        self._parts = []
        self._state = None
        w, self._waiter = self._waiter, None
        if self._buf:  # more than one answer: the connection is out of step
            self.keep_alive = False
        if w is not None and not w.done():
            w.set_result(Response(self._code, self._headers, body, self.first_byte_at))

    def _start_stream(self):
        """Answer the waiter now, with the body to come as a :class:`BodyStream`."""
        self._state = "stream"
        self._body = BodyStream(self, self._want, self._streamed)
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(Response(self._code, self._headers, self._body, self.first_byte_at))
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self._feed(data)

    def _feed(self, data):
        if len(data) >= self._want:
            if len(data) > self._want:  # more than one answer: the connection is out of step
                self.keep_alive = False
                data = data[:self._want]
            self._want = 0
            self._state = None
            body, self._body = self._body, None
            body._push(data)
            body._end()
            return
        self._want -= len(data)
        self._body._push(data)

    def _parse(self):
        buf = self._buf
        while True:
            if self._state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 1 << 20:
                        raise ValueError("header block too large")
                    return
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[:end + 4]
                status = lines[0].split(" ", 2)
                if len(status) < 2 or not status[0].startswith("HTTP/1."):
                    raise ValueError("status line %r" % lines[0][:80])
                code = int(status[1])
                if 100 <= code < 200:
                    if self._interim is not None and not self._interim.done():
                        self._interim.set_result(code)
                    continue  # an interim answer (100 Continue): the real one follows
                headers = Headers()
                for line in lines[1:]:
                    k, sep, v = line.partition(":")
                    if sep:
                        headers[k.strip().lower()] = v.strip()
                self._code = code
                self._headers = headers
                conn_hdr = headers.get("connection", "").lower()
                if conn_hdr == "close" or status[0] == "HTTP/1.0" and conn_hdr != "keep-alive":
                    self.keep_alive = False
                if self._head_only or code in (204, 304):
                    self._done()
                    return
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self._state = "chunked"
                    self._want = -1
                elif "content-length" in headers:
                    self._want = int(headers["content-length"])
                    self._state = "body"
                    if self._streamed is not None and 200 <= code < 300 and self._want > 0:
                        self._start_stream()
                        return
                else:
                    self.keep_alive = False
                    self._state = "eof"
                    return
            elif self._state == "body":
                if len(buf) >= self._want:
                    if len(buf) == self._want:
                        self._parts.append(bytes(buf))
                        buf.clear()
                    else:
                        self._parts.append(bytes(memoryview(buf)[:self._want]))
                        del buf[:self._want]
                    self._done()
                    return
                if buf:  # the rest arrives as whole bytes objects (see data_received)
                    self._parts.append(bytes(buf))
                    self._want -= len(buf)
                    buf.clear()
                return
            elif self._state == "chunked":
                if self._want < 0:  # at a chunk-size line
                    end = buf.find(b"\r\n")
                    if end < 0:
                        return
                    size = int(bytes(buf[:end]).split(b";", 1)[0].strip(), 16)
                    del buf[:end + 2]
                    if size == 0:
                        self._want = -2
                    else:
                        self._want = size + 2  # data + CRLF
                elif self._want == -2:  # trailers until an empty line
                    end = buf.find(b"\r\n")
                    if end < 0:
                        return
                    del buf[:end + 2]
                    if end == 0:
                        self._done()
                        return
                else:
                    if len(buf) < self._want:
                        return
                    self._parts.append(bytes(buf[:self._want - 2]))
                    del buf[:self._want]
                    self._want = -1
            else:
                return


class NodePool:
    """Idle keep-alive connections per ``(host, port)``; ``request`` is the only entry."""

    def __init__(self):
        self._idle = {}
        self._closed = False

    def close(self):
        self._closed = True
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()

    async def _connect(self, host, port):
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, host, port)
        return conn

    async def acquire(self, host, port):
        """A connection for a streamed request: an idle one, else a new one."""
        conn = self._take((host, port))
        return conn if conn is not None else await self._connect(host, port)

    async def connect(self, host, port):
        """A new connection, never an idle one (the retry after a reused one failed)."""
        return await self._connect(host, port)

    def release(self, host, port, conn):
        """Give a connection back after a complete exchange (closed if not reusable)."""
        self._give_back((host, port), conn)

    def _take(self, key):
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            c = conns.pop()
            if not c.closed and now - c.idle_since < IDLE_SECONDS:
                c.reused = True
                return c
            c.close()
        return None

    def _give_back(self, key, conn):
        if self._closed or conn.closed or not conn.keep_alive:
            conn.close()
            return
        conns = self._idle.setdefault(key, [])
        if len(conns) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    async def request(self, host, port, data, head_only, timeout):
        """Send the raw request ``data``; a :class:`Response` or :class:`ConnectionFailed`."""
        return await self._exchange((host, port), data, head_only, timeout, None)

    async def stream(self, host, port, data, timeout):
        """Like :meth:`request` (GET), but a 2xx answer's body is a :class:`BodyStream`.

        ``timeout`` bounds the connection and the answer's headers; the body's
        bytes are bounded by the timeout given to :meth:`BodyStream.take`.
        The consumer must take the body to its end or :meth:`BodyStream.close` it.
        """
        key = (host, port)
        return await self._exchange(key, data, False, timeout, lambda conn: self._give_back(key, conn))

    async def _exchange(self, key, data, head_only, timeout, streamed):
        conn = self._take(key)
        if conn is not None:
            try:
                return await self._on(key, conn, data, head_only, timeout, streamed)
            except ConnectionFailed:
                if conn.got_bytes or conn.timed_out:
                    raise
                # the node closed this idle connection just now: once more on a new one
        try:
            conn = await asyncio.wait_for(self._connect(*key), timeout)
        except TimeoutError:
            raise ConnectionFailed("no connection within %.1fs" % timeout) from None
        except OSError as exc:
            raise ConnectionFailed(str(exc) or type(exc).__name__) from None
        return await self._on(key, conn, data, head_only, timeout, streamed)

    async def _on(self, key, conn, data, head_only, timeout, streamed=None):
        # a timer, not asyncio.wait_for: no extra task per exchange (this is the hot path)
        fut = conn.send(data, head_only, streamed)
        timer = asyncio.get_running_loop().call_later(timeout, conn.expire, timeout)
        try:
            resp = await fut
        except BaseException:
            conn.close()  # timed out, cancelled or failed mid-answer: never reuse
            raise
        finally:
            timer.cancel()
        if not isinstance(resp.body, BodyStream):  # a streamed body gives it back when complete
            self._give_back(key, conn)
        return resp


def build_request(method, path, netloc, headers, body):
    """Request bytes: head (+ body when given)."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + netloc]
    for k, v in headers.items():
        lines.append("%s: %s" % (k, v))
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    elif method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head
