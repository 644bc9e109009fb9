"""The gateway's fast path: a GET or HEAD of a small file answered without Tornado's
request-handler cycle.

Why: a small GET through the gateway is bound by the gateway's CPU, and a
profile under load (bench/README.md) shows about half of it in Tornado's
routing and ``RequestHandler`` life cycle (request object, handler object,
``prepare``, header dictionaries, output transforms, ``flush``) around a
lookup that is itself one batched exchange per node.

:class:`FastReads` sits between Tornado's ``HTTPServer`` and the gateway
application.  A request it may answer alone -- GET or HEAD of
``/files/<valid name>``, without query, ``Range`` or body, with access control
off and within the header and target limits -- gets the usual
:func:`~cluster.gateway.reads.direct_read`; when that brings the winning
record with the whole body (or, for HEAD, just the record), the answer goes
out in one ``write_headers`` call.  Every other request, and every read
outcome needing more work (a miss, a tombstone, a body larger than the first
piece, a replica down or disagreeing, no ring yet), goes to the application
exactly as if it had come straight to it, carrying the read already made
(:func:`take_prefetched`), so no node is asked twice.

The answer is the one :class:`~cluster.gateway.handlers.FilesHandler` gives
(same status, headers and body; ``Date`` is the second it is sent), and it is
counted by the same :class:`~filetracker.server.observe.RequestObserver`.
``GatewayConfig.fast_reads=False`` (``--no-fast-reads``) turns this off.
"""

import logging
import time
from urllib.parse import unquote_to_bytes

import tornado
from tornado import httputil

from cluster.gateway.reads import direct_read
from filetracker.errors import InvalidNameError
from filetracker.httpdate import format_version
from filetracker.names import check_name
from filetracker.server import guard as _guard
from filetracker.server.base import DEFAULT_MAX_HEADER_BYTES

log = logging.getLogger(__name__)

PREFIX = "/files/"
#: attribute of the request's connection carrying a handed-over read to the handler
_PREFETCHED = "ft_prefetched"
#: what Tornado's RequestHandler sends, so both paths answer alike
_SERVER = "TornadoServer/%s" % tornado.version
_OK = httputil.ResponseStartLine("HTTP/1.1", 200, "OK")


class Prefetched:
    """A read the fast path made for a request it handed over (see :func:`take_prefetched`)."""

    __slots__ = ("headers", "direct", "started")

    def __init__(self, headers, direct, started):
        self.headers = headers  # identifies the request: the very HTTPHeaders object Tornado parsed
        self.direct = direct
        self.started = started


def take_prefetched(request):
    """The :class:`Prefetched` the fast path left for ``request`` (a Tornado
    ``HTTPServerRequest``), or None; removed either way, so that it is used once
    and a keep-alive connection does not hold a body between requests."""
    conn = request.connection
    found = conn.__dict__.pop(_PREFETCHED, None) if conn is not None else None
    if found is None or found.headers is not request.headers:
        return None
    return found


class FastReads(httputil.HTTPServerConnectionDelegate):
    """Tornado's server delegate in front of the gateway application ``app``."""

    def __init__(self, app):
        self.app = app
        self.services = app.services
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
        self._date = (0, "")

    def start_request(self, server_conn, request_conn):
        return _Exchange(self, server_conn, request_conn)

    def on_close(self, server_conn):
        self.app.on_close(server_conn)

    def name_of(self, start_line, headers):
        """The file name when this front answers the request itself, else None.

        Whatever it declines (a bad name included) is answered by the
        application, with its error messages.
        """
        if not self.enabled or start_line.method not in ("GET", "HEAD"):
            return None
        uri = start_line.path
        if not uri.startswith(PREFIX) or "?" in uri:
            return None
        if self.max_uri is not None and len(uri) > self.max_uri:
            return None
        if "Range" in headers or "Transfer-Encoding" in headers \
                or headers.get("Content-Length", "0").strip() != "0":
            return None
        if sum(len(k) + len(v) + 4 for k, v in headers.get_all()) > self.max_header:
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


class _Exchange(httputil.HTTPMessageDelegate):
    """One request on a connection: answered here, or passed through to the application."""

    __slots__ = ("front", "server_conn", "conn", "inner", "start_line", "headers", "name", "started")

    def __init__(self, front, server_conn, request_conn):
        self.front = front
        self.server_conn = server_conn
        self.conn = request_conn
        self.inner = None  # the application's delegate, once handed over

    def headers_received(self, start_line, headers):
        name = self.front.name_of(start_line, headers)
        if name is None:
            self.inner = self.front.app.start_request(self.server_conn, self.conn)
            return self.inner.headers_received(start_line, headers)
        self.started = time.time()
        self.start_line, self.headers, self.name = start_line, headers, name
        return None

    def data_received(self, chunk):
        # only handed-over requests have a body (name_of declines the others)
        return self.inner.data_received(chunk)

    def finish(self):
        if self.inner is not None:
            self.inner.finish()
            return
        self.front.services.spawn(self._answer_or_close())

    def on_connection_close(self):
        if self.inner is not None:
            self.inner.on_connection_close()

    async def _answer_or_close(self):
        try:
            await self._answer()
        except Exception:  # a bug: the client gets a closed connection, not a hang
            log.exception("%s %s failed", self.start_line.method, self.start_line.path)
            self.conn.close()

    async def _answer(self):
        front, conn = self.front, self.conn
        services = front.services
        with_body = self.start_line.method == "GET"
        direct = None
        if services.view.ring is not None:
            try:
                direct = await direct_read(services, self.name, with_body)
            except Exception:
                log.exception("fast read of %s failed; the full path answers", self.name)
        if conn.stream.closed():
            return  # the client went away; Tornado has ended this connection
        winner = direct.read.winner if direct is not None else None
        if winner is None or winner.deleted or (with_body and (
                direct.first is None or winner.size > services.config.range_size)):
            await self._hand_over(direct)
            return
        headers = httputil.HTTPHeaders()
        headers["Server"] = _SERVER
        headers["Content-Type"] = "application/octet-stream"
        headers["Date"] = front.date()
        headers["Last-Modified"] = format_version(winner.version)
        headers["Accept-Ranges"] = "bytes"
        headers["Content-Length"] = str(winner.size)
        body = direct.first if with_body else None
        sent = conn.write_headers(_OK, headers, body or None)
        conn.finish()
        if front.send_timeout and not sent.done():
            # a client that stops reading must not hold the connection and the body for ever
            _guard.bound_send(sent, conn, front.send_timeout, "%s %s" % (self.start_line.method,
                                                                         self.start_line.path))
        if front.record is not None:
            front.record(self.start_line.method, self.start_line.path, 200, time.time() - self.started,
                         0, len(body) if body else 0, conn.context.remote_ip)

    async def _hand_over(self, direct):
        """Give the request to the application, as Tornado would have (no body: GET/HEAD)."""
        if direct is not None:
            setattr(self.conn, _PREFETCHED, Prefetched(self.headers, direct, self.started))
        self.inner = self.front.app.start_request(self.server_conn, self.conn)
        waiting = self.inner.headers_received(self.start_line, self.headers)
        if waiting is not None:
            await waiting
        self.inner.finish()


def serve_front(app, config):
    """What the gateway's HTTP server should call: :class:`FastReads` around ``app``,
    or ``app`` itself when ``config.fast_reads`` is off."""
    return FastReads(app) if getattr(config, "fast_reads", True) else app

