"""A fast front for small requests answered outside Tornado's request-handler cycle.

Why: a small GET is bound by the server's CPU, and a profile under load shows
about half of it in Tornado's routing and ``RequestHandler`` life cycle
(request object, handler object, ``prepare``, header dictionaries, output
transforms, ``flush``).  When the answer is already known (a cached body, a
gateway's direct read) that cycle is most of the work.

:class:`FastFront` sits between Tornado's ``HTTPServer`` and the application.
A request it may take -- by default GET or HEAD of ``/files/<valid name>``
without query, ``Range`` or body, with access control off and within the header
and target limits; a subclass chooses others with :meth:`FastFront.select` --
is given to an *answerer*, a callable ``answerer(exchange)`` that either sends
the whole answer (:meth:`Exchange.send_whole`, :meth:`Exchange.send`) or hands
the request over (:meth:`Exchange.hand_over`, with its body if it had one), at
once or later from a task.  Every other request goes to the application exactly
as if it had come straight to it.  A handed-over request may carry what the
answerer already learned (:func:`take_prefetched`), so that no work is done twice.

:meth:`Exchange.send_whole` gives the answer the handlers give (status 200,
the same headers -- ``Date`` is the second it is sent -- and body) and counts it
with the application's :class:`~filetracker.server.observe.RequestObserver`.
A client that stops reading is cut after the guard's ``send_timeout``, as
with the handlers.
"""

import logging
import time
from urllib.parse import unquote_to_bytes

import tornado
from tornado import gen, httputil

from filetracker.errors import InvalidNameError
from filetracker.httpdate import format_version
from filetracker.names import check_name
from filetracker.server import guard as _guard
from filetracker.server.base import ACTIVITY_SETTING, DEFAULT_MAX_HEADER_BYTES, header_bytes, leave_held

log = logging.getLogger(__name__)

PREFIX = "/files/"
#: attribute of the request's connection carrying a handed-over request's findings
_PREFETCHED = "ft_prefetched"
#: what Tornado's RequestHandler sends, so both paths answer alike
_SERVER = "TornadoServer/%s" % tornado.version
_OK = httputil.ResponseStartLine("HTTP/1.1", 200, "OK")
#: request body types Tornado parses itself (HTTPServerRequest._parse_body)
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
#: most Host header values whose verdict is remembered
MAX_HOSTS = 256


class Prefetched:
    """What the front learned about a request it handed over (see :func:`take_prefetched`)."""

    __slots__ = ("headers", "value", "started")

    def __init__(self, headers, value, started):
        self.headers = headers  # identifies the request: the very HTTPHeaders object Tornado parsed
        self.value = value
        self.started = started


def take_prefetched(request):
    """The :class:`Prefetched` the front left for ``request`` (a Tornado ``HTTPServerRequest``),
    or None; removed either way, so that it is used once and a keep-alive connection does not
    hold it between requests.  The request's start time becomes the front's, so the latency
    metric counts the front's part too."""
    conn = request.connection
    found = conn.__dict__.pop(_PREFETCHED, None) if conn is not None else None
    if found is None or found.headers is not request.headers:
        return None
    request._start_time = found.started  # no public setter; request_time() reads it
    return found


class FastFront(httputil.HTTPServerConnectionDelegate):
    """Tornado's server delegate in front of ``app``, giving plain small reads to ``answerer``."""

    def __init__(self, app, answerer):
        self.app = app
        self.answerer = answerer
        observer = app.settings.get("log_function")
        self.record = getattr(observer, "record", None)  # RequestObserver.record, when instrumented
        guard = app.settings.get(_guard.SETTING)
        limits = guard.limits if guard is not None else _guard.Limits()
        # access control has its own answers (401/403): those requests take the full path
        self.enabled = guard is None or guard.auth is None
        self.max_uri = limits.max_uri_bytes
        self.max_header = limits.max_header_bytes if limits.max_header_bytes is not None \
            else DEFAULT_MAX_HEADER_BYTES
        self.send_timeout = limits.send_timeout
        # requests in progress, which a stop lets end (HTTPServer.drain); None: not counted
        self.activity = app.settings.get(ACTIVITY_SETTING)
        self._date = (0, "")
        self._hosts = {}  # Host header value -> accepted by Tornado (host_ok)

    def start_request(self, server_conn, request_conn):
        return Exchange(self, server_conn, request_conn)

    def host_ok(self, start_line, headers):
        """True when Tornado would accept the request's Host header (HTTP/1.1 needs one; no
        comma, i.e. not two of them; a valid host).  Tornado checks it while building the
        request object, which the front never builds; every other request gets Tornado's
        400.  The verdicts are remembered per value (a server sees few)."""
        host = headers.get("Host")
        if host is None:
            return start_line.version != "HTTP/1.1"
        verdict = self._hosts.get(host)
        if verdict is None:
            try:
                httputil.HTTPServerRequest(start_line=httputil.RequestStartLine("GET", "/", start_line.version),
                                           headers=httputil.HTTPHeaders({"Host": host}))
                verdict = True
            except httputil.HTTPInputError:
                verdict = False
            if len(self._hosts) >= MAX_HOSTS:  # bounded: a client can send any value
                self._hosts.clear()
            self._hosts[host] = verdict
        return verdict

    def select(self, start_line, headers):
        """What the answerer is given as ``exchange.target`` when the front takes the request,
        else None (the application answers it).  This front takes plain GET/HEAD of
        ``/files/<name>`` (:meth:`name_of`); a subclass may take others, bodies included (bounded
        by the ``body_limit`` it gives :meth:`plain`: the front holds a body whole).  Whatever
        it declines is answered by the application, with its error messages."""
        return self.name_of(start_line, headers)

    def plain(self, start_line, headers, methods, body_limit=0):
        """True when the request is one a front may take at all: access control off, one of
        ``methods``, within the target and header limits, a Host Tornado accepts, no
        ``Range`` or ``Transfer-Encoding``, and a body (by ``Content-Length``) of at most
        ``body_limit`` bytes; when a body is allowed, none with a ``Content-Encoding`` or a
        form ``Content-Type`` (Tornado parses form bodies before a handler runs, and may
        answer 400 where the front would not)."""
        if not self.enabled or start_line.method not in methods:
            return False
        if self.max_uri is not None and len(start_line.path) > self.max_uri:
            return False
        if "Range" in headers or "Transfer-Encoding" in headers:
            return False
        length = headers.get("Content-Length", "0").strip()
        # (the length check first: int() refuses digit strings of thousands of digits)
        if not (length.isascii() and length.isdigit()) or len(length) > 19 or int(length) > body_limit:
            return False
        if body_limit and ("Content-Encoding" in headers
                           or headers.get("Content-Type", "").lower().startswith(_FORMS)):
            return False
        if header_bytes(headers) > self.max_header:
            return False
        return self.host_ok(start_line, headers)

    def name_of(self, start_line, headers):
        """The file name of a plain GET/HEAD of ``/files/<name>`` without query, else None."""
        uri = start_line.path
        if not uri.startswith(PREFIX) or "?" in uri:
            return None
        if not self.plain(start_line, headers, ("GET", "HEAD")):
            return None
        try:  # decoded as Tornado decodes a path argument: percent escapes, then UTF-8
            name, _version = check_name("/" + unquote_to_bytes(uri[len(PREFIX):]).decode("utf-8"),
                                        allow_version=True)  # the client checks the version it gets
        except (UnicodeDecodeError, InvalidNameError):
            return None
        return name

    def date(self):
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, httputil.format_timestamp(now))
        return self._date[1]


class Exchange(httputil.HTTPMessageDelegate):
    """One request on a connection: answered by the front's answerer, or passed to the application.

    For the answerer: ``target`` (what :meth:`FastFront.select` returned; ``name``
    is the same, the file name for the default front), ``body`` (the request's
    body, bytes), ``with_body`` (GET, not HEAD), ``conn`` (Tornado's
    HTTP1Connection), :meth:`closed`, :meth:`send_whole` or :meth:`send`,
    :meth:`hand_over`.  Exactly one of the answers or :meth:`hand_over` must be called.
    """

    __slots__ = ("front", "server_conn", "conn", "inner", "start_line", "headers", "target", "started",
                 "answered", "_chunks", "body", "held")

    def __init__(self, front, server_conn, request_conn):
        self.front = front
        self.server_conn = server_conn
        self.conn = request_conn
        self.inner = None  # the application's delegate, once handed over
        self.answered = False  # the answer was sent whole
        self._chunks = None  # the body's pieces, for a front that takes bodies
        self.body = b""
        self.held = None  # this request's count in the front's Activity, while the front has it

    @property
    def name(self):
        return self.target

    @property
    def with_body(self):
        return self.start_line.method == "GET"

    def headers_received(self, start_line, headers):
        target = self.front.select(start_line, headers)
        if target is None:
            self.inner = self.front.app.start_request(self.server_conn, self.conn)
            return self.inner.headers_received(start_line, headers)
        if self.front.activity is not None:
            self.held = self.front.activity.hold()
        self.started = time.time()
        self.start_line, self.headers, self.target = start_line, headers, target
        return None

    def data_received(self, chunk):
        if self.inner is not None:
            return self.inner.data_received(chunk)
        if self._chunks is None:
            self._chunks = []
        self._chunks.append(chunk)  # bounded: select() takes only bodies it can hold
        return None

    def finish(self):
        if self.inner is not None:
            self.inner.finish()
            return
        if self._chunks is not None:
            self.body, self._chunks = b"".join(self._chunks), None
        try:
            self.front.answerer(self)
        except Exception:  # a bug: the client gets a closed connection, not a hang
            self.fail()

    def on_connection_close(self):
        if self.inner is not None:
            self.inner.on_connection_close()
            leave_held(self.conn, None)   # handed over, but the handler never began
        self._release()

    def _release(self):
        """Stop counting this request as in progress (idempotent)."""
        held, self.held = self.held, None
        if held is not None:
            held.end()

    def closed(self):
        """True when the client went away (Tornado has then ended this connection)."""
        return self.conn.stream.closed()

    def fail(self):
        """Log the current exception and close the connection (an answerer's bug), unless the
        answer was already sent whole."""
        log.exception("%s %s failed", self.start_line.method, self.start_line.path)
        if not self.answered:
            self.conn.close()
        self._release()
        leave_held(self.conn, None)   # handed over (hand_over failed part-way): no handler took it

    def send_whole(self, version, size, body):
        """Answer 200 with the file's headers and ``body`` (its ``size`` bytes; ignored for HEAD)."""
        self.send({"Content-Type": "application/octet-stream",
                   "Last-Modified": format_version(version),
                   "Accept-Ranges": "bytes",
                   "Content-Length": str(size)}, body if self.with_body else None)

    def send(self, fields, body):
        """Answer 200 with ``Server`` and ``Date`` as Tornado sends them, then ``fields`` (a dict,
        ``Content-Length`` among them) and ``body`` (bytes or None)."""
        if self.closed():
            self._release()
            return
        front, conn = self.front, self.conn
        headers = httputil.HTTPHeaders()
        headers["Server"] = _SERVER
        headers["Date"] = front.date()
        for key, value in fields.items():
            headers[key] = value
        sent = conn.write_headers(_OK, headers, body or None)
        conn.finish()
        self.answered = True
        self._release()   # the answer is written (a stop's drain waits for it to leave the socket)
        if front.send_timeout and not sent.done():
            # a client that stops reading must not hold the connection and the body for ever
            _guard.bound_send(sent, conn, front.send_timeout,
                              "%s %s" % (self.start_line.method, self.start_line.path))
        if front.record is not None:
            front.record(self.start_line.method, self.start_line.path, 200, time.time() - self.started,
                         len(self.body), len(body) if body else 0, conn.context.remote_ip)

    def hand_over(self, prefetched=None):
        """Give the request to the application, as Tornado would have, but for the body (if any):
        it comes as one piece, after the handler's ``prepare``, and is delivered even when
        ``prepare`` answered already (fine for non-streaming handlers, which ignore it then;
        the only kind a front hands a body to today).  ``prefetched`` (any value) reaches the
        handler through :func:`take_prefetched`."""
        if self.closed():
            self._release()
            return
        # the handler's prepare takes the count over: it never drops to zero in between
        held, self.held = self.held, None
        leave_held(self.conn, held)
        if prefetched is not None:
            setattr(self.conn, _PREFETCHED, Prefetched(self.headers, prefetched, self.started))
        inner = self.inner = self.front.app.start_request(self.server_conn, self.conn)
        waiting = inner.headers_received(self.start_line, self.headers)
        if waiting is None:
            self._finish_inner()
        else:  # a body-streaming handler: its prepare() runs first, as with Tornado
            gen.convert_yielded(waiting).add_done_callback(lambda _: self._finish_inner())

    def _finish_inner(self):
        # Tornado calls a delegate's finish() only while the connection is open: a client that
        # left meanwhile has had the handler's on_connection_close instead
        if self.closed():
            return
        body, self.body = self.body, b""
        if body:
            waiting = self.inner.data_received(body)
            if waiting is not None:  # a streaming handler wants the piece written first
                gen.convert_yielded(waiting).add_done_callback(lambda _: self._finish_inner())
                return
        self.inner.finish()
