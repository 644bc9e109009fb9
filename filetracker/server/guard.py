"""The request guard of every server: access control and request limits.

One object per application, given as the Tornado application setting
``ft_guard`` (see :func:`guard_settings`); :class:`filetracker.server.base.BaseHandler`
consults it, so the single server, the storage nodes and the gateway share
one implementation.  Without the setting nothing is checked.

What it answers (each with ``X-Exception`` and a short text body):

- 414 when the request target is longer than ``max_uri_bytes``;
- 401 (``WWW-Authenticate: Basic``) / 403 from the token table
  (:class:`filetracker.auth.TokenFile`), when access control is on;
- 413 when ``Content-Length`` (or, for a chunked body, the bytes received so
  far) exceeds ``max_body_size``;
- 503 + ``Retry-After`` when ``max_uploads`` request bodies are already being
  received by this process;
- 408 (then the connection is closed) when a request body stalls for
  ``body_idle_timeout`` seconds; a response the client stops reading for
  ``send_timeout`` seconds has its connection closed.  Together with
  Tornado's header timeout (the idle timeout) and total body timeout, a slow
  client cannot hold a connection for ever.
"""

import fcntl
import logging
import struct
import termios
from dataclasses import dataclass, field

from tornado.concurrent import Future
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from filetracker.auth import WWW_AUTHENTICATE
from filetracker.server.futures import mark_retrieved

log = logging.getLogger("filetracker.server")

#: Name of the Tornado application setting holding the :class:`Guard`.
SETTING = "ft_guard"


@dataclass(frozen=True)
class Limits:
    """Request limits (``None``: unlimited)."""

    max_body_size: int | None = None
    max_uri_bytes: int | None = 16 * 1024
    body_idle_timeout: float | None = 120.0
    send_timeout: float | None = 300.0
    max_uploads: int | None = None
    #: total size of the request's header lines (431 above it); None: the handler's own default
    max_header_bytes: int | None = None
    #: seconds a client is told to wait after a 503 for too many uploads
    retry_after: int = 1


class UploadSlots:
    """A counter of request bodies being received; refuses above ``limit``."""

    def __init__(self, limit):
        self.limit = limit
        self.active = 0

    def try_acquire(self):
        if self.limit is not None and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self):
        self.active = max(0, self.active - 1)


@dataclass
class Guard:
    """``auth``: a :class:`filetracker.auth.TokenFile` (or TokenTable), None = open."""

    auth: object = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        self.uploads = UploadSlots(self.limits.max_uploads)


def guard_settings(auth=None, limits=None):
    """Application settings (``**`` into ``tornado.web.Application``) that install a guard."""
    return {SETTING: Guard(auth=auth, limits=limits or Limits())}


def delivered(stream):
    """Bytes of ``stream`` (a Tornado IOStream) the peer has received, or None if unknown.

    Bytes handed to the kernel (IOStream's count) minus those still in the socket's send
    queue (``TIOCOUTQ``: unsent + unacknowledged), so a full kernel buffer does not look
    like progress and a draining one does.
    """
    done = getattr(stream, "_total_write_done_index", None)
    sock = getattr(stream, "socket", None)
    if done is None or sock is None:
        return None
    try:
        return done - unsent(sock.fileno())
    except (OSError, ValueError):
        return done


def unsent(fd):
    """Bytes in socket ``fd``'s send queue (``TIOCOUTQ``: unsent + unacknowledged)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def _streams_body(handler):
    return bool(getattr(type(handler), "_stream_request_body", False))


def announces_body(headers):
    """True when a request head says a body follows (a non-zero length, or chunked)."""
    return headers.get("Content-Length", "0").strip() not in ("", "0") or \
        "chunked" in headers.get("Transfer-Encoding", "").lower()


def declared_length(headers):
    """The request's ``Content-Length`` as an int; None when it has none or a malformed one
    (more than 19 digits is no length a server takes, and int() refuses thousands of them)."""
    length = headers.get("Content-Length")
    if length is None:
        return None
    length = length.strip()
    if not (length.isascii() and length.isdigit()) or len(length) > 19:
        return None
    return int(length)


class GuardedRequest:
    """The guard's state for one request (kept on the handler as ``_guarded``)."""

    def __init__(self, guard, handler):
        self.guard = guard
        self.handler = handler
        self.slot = False
        self.body_done = False
        self.received = 0
        self.last_data = None  # set when the body is watched: IOLoop.current() costs ~2 % of a GET
        self.refused = False
        self._timer = None

    # ---- admission (called from BaseHandler.prepare) ----------------------------

    def admit(self):
        """Raise :class:`HTTPFail` when the request may not go on."""
        from filetracker.server.base import HTTPFail  # base imports this module

        h, limits = self.handler, self.guard.limits
        req = h.request
        if limits.max_uri_bytes is not None and len(req.uri) > limits.max_uri_bytes:
            raise HTTPFail(414, "request target too long (%d bytes, limit %d)"
                           % (len(req.uri), limits.max_uri_bytes))
        if self.guard.auth is not None:
            decision = self.guard.auth.decide(req.headers.get("Authorization"), req.method, req.path)
            if decision.status == 401:
                raise HTTPFail(401, decision.message, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
            if decision.status != 200:
                raise HTTPFail(decision.status, decision.message)
        length = declared_length(req.headers)
        if length is None and req.headers.get("Content-Length") is not None:
            raise HTTPFail(400, "malformed Content-Length")
        if length is not None and limits.max_body_size is not None and _streams_body(h) \
                and length > limits.max_body_size:
            raise HTTPFail(413, "request body too large (%s bytes, limit %d)"
                           % (req.headers["Content-Length"].strip(), limits.max_body_size))
        if not _streams_body(h):
            return   # a plain Tornado handler: its body was read already, within make_server's limit
        # The server's own limit (make_server) would cut the connection without an answer; a
        # streamed body is bounded here instead (413 with a message, see _watch_body), and a
        # body kept in memory by its handler (BaseHandler.max_buffered_body).
        req.connection.set_max_body_size(1 << 62)
        if req.method == "PUT" and getattr(h, "takes_upload_slot", False):
            if not self.guard.uploads.try_acquire():
                raise HTTPFail(503, "too many uploads in progress (limit %d); retry later"
                               % self.guard.uploads.limit,
                               headers={"Retry-After": str(limits.retry_after)})
            self.slot = True
        if req.method in ("PUT", "POST") or announces_body(req.headers):
            self._watch_body()   # a stalled body of any method gets its 408

    def release(self):
        """Give back the upload slot and stop the body timer (idempotent)."""
        if self.slot:
            self.slot = False
            self.guard.uploads.release()
        self._stop_timer()

    def _stop_timer(self):
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
            self._timer = None

    # ---- the request body -------------------------------------------------------

    def _watch_body(self):
        """Count body bytes and time between them: wrap the handler's ``data_received``
        and its HTTP method (called once the body is complete) on the instance."""
        h = self.handler
        self.last_data = IOLoop.current().time()
        inner_data = h.data_received
        method_name = h.request.method.lower()
        inner_method = getattr(h, method_name)

        def data_received(chunk):
            if self.refused:
                return None  # answered already: drain and drop
            self.received += len(chunk)
            self.last_data = IOLoop.current().time()
            limit = self.guard.limits.max_body_size
            if limit is not None and self.received > limit:
                self.refuse(413, "request body too large (more than %d bytes)" % limit)
                return None
            return inner_data(chunk)

        def method(*args, **kwargs):
            self.body_done = True  # the slot is kept until the answer (commit included)
            self._stop_timer()
            return inner_method(*args, **kwargs)

        h.data_received = data_received
        setattr(h, method_name, method)
        if self.guard.limits.body_idle_timeout:
            self._schedule(self.guard.limits.body_idle_timeout)

    def _schedule(self, delay):
        self._timer = IOLoop.current().call_later(delay, self._check_idle)

    def _check_idle(self):
        self._timer = None
        h = self.handler
        if self.body_done or self.refused or h._finished:
            return
        timeout = self.guard.limits.body_idle_timeout
        prepared = getattr(h, "_prepared_future", None)
        if prepared is not None and not prepared.done():
            # the handler's prepare() is still working (e.g. the gateway connecting to the
            # replicas): Tornado reads no body meanwhile, so the client is not idle
            self.last_data = IOLoop.current().time()
        idle = IOLoop.current().time() - self.last_data
        if idle < timeout:
            self._schedule(timeout - idle)
            return
        self.refuse(408, "request body timeout: no data for %g seconds" % timeout)

    def refuse(self, status, message):
        """Answer ``status`` in the middle of receiving the body, then close the connection.

        The handler's own clean-up (abort the upload) runs first through its
        ``on_connection_close``; Tornado closes the connection after the answer
        because the body was not read to its end.
        """
        from filetracker.server.base import HTTPFail, logged_path

        h = self.handler
        self.refused = True
        log.info("%s %s -> %d: %s", h.request.method, logged_path(h.request.path), status, message)
        try:
            h.on_connection_close()
        except Exception:
            log.exception("clean-up of a refused request failed")
        self.release()
        if h._finished:
            return
        exc = HTTPFail(status, message)
        try:
            h.send_error(status, exc_info=(HTTPFail, exc, None))
        except Exception:
            h.request.connection.close()

    # ---- the response ----------------------------------------------------------

    def bounded_flush(self, future):
        """``future`` (a flush), failing with StreamClosedError when the client takes no
        bytes for ``send_timeout`` seconds; the connection is then closed (:func:`bound_send`)."""
        from filetracker.server.base import logged_path

        req = self.handler.request
        return bound_send(future, req.connection, self.guard.limits.send_timeout,
                          "%s %s" % (req.method, logged_path(req.path)))


def bound_send(future, connection, timeout, what):
    """``future`` (bytes being sent on ``connection``, a Tornado HTTP1Connection), failing
    with StreamClosedError, the connection closed, when the client takes no bytes for
    ``timeout`` seconds (None or 0: unbounded).  ``what`` names the request in the log line.

    Progress is the count of bytes the client took (:func:`delivered`), so a slow
    reader that keeps reading is never cut, only one that stopped.
    """
    if not timeout or future.done():
        return future
    out = Future()
    out.add_done_callback(mark_retrieved)
    loop = IOLoop.current()
    stream = getattr(connection, "stream", None)
    state = {"seen": delivered(stream), "handle": None}

    def check():
        if out.done():
            return
        now = delivered(stream)
        if now is not None and now != state["seen"]:
            state["seen"] = now
            state["handle"] = loop.call_later(timeout, check)
            return
        log.info("%s: client read nothing for %g seconds; closing", what, timeout)
        connection.close()
        out.set_exception(StreamClosedError())

    state["handle"] = loop.call_later(timeout, check)

    def done(f):
        loop.remove_timeout(state["handle"])
        exc = f.exception() if not f.cancelled() else StreamClosedError()
        if out.done():
            return
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(None)

    future.add_done_callback(done)
    return out
