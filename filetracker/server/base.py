"""Reusable Tornado pieces: error answers, name parsing, the version helpers.

Every server of the project (single node, cluster node, gateway) answers
errors the same way: a status code, an ``X-Exception: <one line>`` header and
a short ``text/plain`` body, never a traceback.  Handlers raise
:class:`HTTPFail` (or a :class:`~filetracker.errors.FiletrackerError` that
:func:`status_for` maps) and :class:`BaseHandler.write_error` does the rest.
"""

import asyncio
import logging

import tornado.web
from tornado.iostream import StreamClosedError

from filetracker.errors import (
    NO_SUCH_ENDPOINT,
    FiletrackerError,
    InvalidNameError,
    InvalidVersionError,
    NotFoundError,
    VersionConflictError,
)
from filetracker.httpdate import MAX_VERSION, format_version, parse_version
from filetracker.names import check_folder, check_name
from filetracker.ranges import RangeNotSatisfiable
from filetracker.server import guard as _guard
from filetracker.storage.errors import (
    BlobMissing,
    ChecksumMismatch,
    SizeMismatch,
    StoreFull,
)

log = logging.getLogger("filetracker.server")

#: Longest X-Exception value we send (the body carries the same text).
MAX_REASON = 400
#: Default limit of the total size of a request's header lines (answer 431 above it).
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


class HTTPFail(tornado.web.HTTPError):
    """An error answer: ``HTTPFail(404, "no such file: /a")``."""

    def __init__(self, status, message, headers=None):
        super().__init__(status, log_message=None)
        self.message = message
        self.headers = dict(headers or {})


#: Library errors -> HTTP status.  Order matters: first match wins.
_STATUS = (
    (InvalidNameError, 400),
    (InvalidVersionError, 400),
    (ChecksumMismatch, 400),
    (SizeMismatch, 400),
    (NotFoundError, 404),
    (VersionConflictError, 409),
    (RangeNotSatisfiable, 416),
    (StoreFull, 507),
    (BlobMissing, 409),
)


def status_for(exc):
    """The HTTP status that answers ``exc`` (500 for unexpected errors)."""
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def one_line(text):
    """``text`` as one header-safe line of printable ASCII, bounded in length."""
    text = " ".join(str(text).split())
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text[:MAX_REASON]


#: the longest request path a log line shows whole (a name is at most 1024 bytes)
MAX_LOGGED_PATH = 1100


def logged_path(path):
    """``path`` (a request's path: never its query string, which may carry anything) as log
    lines show it: cut after :data:`MAX_LOGGED_PATH` characters, so a 20 KB request target
    (answered 414) is not written whole into every log line about it."""
    if len(path) <= MAX_LOGGED_PATH:
        return path
    return "%s... (%d characters)" % (path[:MAX_LOGGED_PATH], len(path))


def header_bytes(headers):
    """The size of a request's header lines as the header limit counts it (name, ``": "``,
    value and CRLF of each line); ``headers`` is Tornado's ``HTTPHeaders``."""
    return sum(len(k) + len(v) + 4 for k, v in headers.get_all())


def name_from_path(path_arg, allow_version=True):
    """Validate a URL path argument (already percent-decoded by Tornado) as a file name.

    ``path_arg`` is what follows ``/files/``; returns ``(name, version_or_None)``.
    Raises :class:`HTTPFail` 400 with the reason for an invalid name.
    """
    try:
        return check_name("/" + (path_arg or ""), allow_version=allow_version)
    except InvalidNameError as e:
        raise HTTPFail(400, "invalid file name: %s" % e)


def folder_from_path(path_arg):
    """Validate a URL path argument as a folder to list (``""`` is the root)."""
    try:
        return check_folder("/" + (path_arg or ""))
    except InvalidNameError as e:
        raise HTTPFail(400, "invalid folder name: %s" % e)


def request_version(handler, path_version=None, required=True):
    """The version of a PUT/DELETE: ``?last_modified=``, else a ``Last-Modified``
    request header (protocol 1), else the ``@version`` of the path.

    Raises :class:`HTTPFail` 400 when missing (and ``required``) or malformed.
    """
    text = handler.get_query_argument("last_modified", None)
    if text is None:
        text = handler.request.headers.get("Last-Modified")
    if text is None:
        if path_version is not None:
            if path_version > MAX_VERSION:  # a store keeps 64-bit integers: refused, not a 500 later
                raise HTTPFail(400, "version %d out of range (at most %d)" % (path_version, MAX_VERSION))
            return path_version
        if required:
            raise HTTPFail(400, "last_modified is required (query parameter, an HTTP date)")
        return None
    try:
        return parse_version(text)
    except InvalidVersionError as e:
        raise HTTPFail(400, "invalid last_modified: %s" % e)


#: The 403 texts of a server that takes no public write at all, whatever the file: a read-only
#: server, and (the start of) a storage node's without --allow-public-writes.  An importer
#: stops at the first of them (cluster/admin/importer.py) instead of failing every file.
READ_ONLY = "this server is read-only"
NO_PUBLIC_WRITES = "public writes are disabled"


def no_such_file(name):
    """The 404 of a name that does not exist or whose newest record is a tombstone."""
    return HTTPFail(404, "no such file: %s" % name)


def deleted_since(name, deleted_version, version):
    """The 409 of an upload at ``version`` that a delete at ``deleted_version`` (not older) wins
    over: nothing was stored.  (The 2.x client stamps a delete and an upload with the current
    second, so a re-upload in the same second as the delete gets this.)"""
    return HTTPFail(409, "%s was deleted at a version (%s) not older than this upload (%s); "
                         "upload it with a later version" % (name, format_version(deleted_version),
                                                            format_version(version)),
                    headers={"Last-Modified": format_version(deleted_version)})


#: the application setting holding its :class:`Activity` (requests in progress), if counted
ACTIVITY_SETTING = "ft_activity"


class Activity:
    """The requests a process has in progress, so that a stop can let them end: held from
    :meth:`BaseHandler.prepare` (or from the moment a fast front takes a request,
    :mod:`filetracker.server.front`) until the answer is finished or the client goes away."""

    def __init__(self):
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def hold(self):
        """Count one more request in progress, until the :class:`Held` returned is ended."""
        self.count += 1
        self._idle.clear()
        return Held(self)

    def _end(self):
        self.count = max(0, self.count - 1)
        if not self.count:
            self._idle.set()

    async def wait_idle(self, timeout):
        """True once no request is in progress; False when ``timeout`` seconds pass first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Held:
    """One request counted in an :class:`Activity`; :meth:`end` (idempotent) stops counting it.

    A fast front that takes a request holds one from the start and, when it hands the request
    over to the application, leaves it on the connection (:func:`leave_held`) for the handler's
    ``prepare`` to take (:func:`take_held`): the count never drops to zero in between, which
    would let a stop close the connection of a request still in progress."""

    __slots__ = ("_activity",)

    def __init__(self, activity):
        self._activity = activity

    def end(self):
        activity, self._activity = self._activity, None
        if activity is not None:
            activity._end()


#: attribute of a connection carrying the Held of a request a front handed over
_HELD_ATTR = "ft_held"


def leave_held(conn, held):
    """Leave ``held`` on Tornado's connection ``conn`` (one per request) for the handler's
    :func:`take_held`; one left there before and never taken is ended.  ``held`` None: only
    end such a leftover (the request failed or the client left before a handler began).
    A request handed to a handler that is not a :class:`BaseHandler` keeps its count until
    the stop's grace ends (no such route sits behind a front)."""
    stale = conn.__dict__.pop(_HELD_ATTR, None)
    if stale is not None:
        stale.end()
    if held is not None:
        setattr(conn, _HELD_ATTR, held)


def take_held(conn):
    """The Held :func:`leave_held` left on ``conn`` (removed), or None."""
    return conn.__dict__.pop(_HELD_ATTR, None) if conn is not None else None


#: bytes of request body a handler that does not stream its body keeps by default (413 above):
#: no public endpoint but the uploads takes a body
SMALL_BODY = 64 * 1024
#: seconds an error answer to a request with a small body waits for the rest of that body
SMALL_BODY_WAIT = 10.0


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Errors as status + X-Exception + short text; request header size checked.

    Subclasses that override :meth:`prepare` (or :meth:`on_connection_close`)
    must call the ``super()`` method.  ``max_header_bytes`` may be given as an
    initialize argument.  When the application setting ``ft_guard`` holds a
    :class:`filetracker.server.guard.Guard`, :meth:`prepare` also applies its
    access control and limits (401/403/408/413/414/503).

    Every handler receives its body as a stream, so :meth:`prepare` (access
    control, the cluster secret, limits) runs as soon as the request head has
    arrived, before any body byte is read: a request that may not go on costs
    no memory and is answered at once.  A handler that does not stream its body
    gets it in memory through the default :meth:`data_received`, at most
    ``max_buffered_body`` bytes (413 above), and reads it with
    :meth:`request_body`.
    """

    max_header_bytes = DEFAULT_MAX_HEADER_BYTES
    #: the most body bytes the default :meth:`data_received` keeps (413 above)
    max_buffered_body = SMALL_BODY
    #: whether a PUT to this handler is an upload that takes one of the guard's ``max_uploads`` slots
    takes_upload_slot = False
    _guarded = None
    _held = None   # this request's count in the application's Activity, while it counts
    _buffered = None   # the body so far (a bytearray), for handlers that do not stream it
    _finishing = None  # an error answer waiting for the rest of a small body (see finish)

    def initialize(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    def prepare(self):
        activity = self.settings.get(ACTIVITY_SETTING)
        if activity is not None and self._held is None:
            self._held = take_held(self.request.connection) or activity.hold()
        guard = self.settings.get(_guard.SETTING)
        limit = self.max_header_bytes
        if guard is not None and guard.limits.max_header_bytes is not None:
            limit = guard.limits.max_header_bytes
        total = header_bytes(self.request.headers)
        if total > limit:
            raise HTTPFail(431, "request headers too large (%d bytes, limit %d)" % (total, limit))
        if guard is not None:
            self._guarded = _guard.GuardedRequest(guard, self)
            self._guarded.admit()

    def data_received(self, chunk):
        """Keep the body in memory for :meth:`request_body` (handlers that stream theirs override
        this); a body longer than ``max_buffered_body`` is refused with 413 as it arrives."""
        if self._finished:
            return   # answered already (refused): the rest is drained and dropped
        if self._buffered is None:
            self._buffered = bytearray()
        if len(self._buffered) + len(chunk) > self.max_buffered_body:
            self._buffered = None
            message = "request body too large for %s (more than %d bytes)" % (
                one_line(self.request.path), self.max_buffered_body)
            if self._guarded is not None:
                self._guarded.refuse(413, message)
            else:
                self.send_error(413, exc_info=(HTTPFail, HTTPFail(413, message), None))
            return
        self._buffered += chunk

    def finish(self, chunk=None):
        """Tornado's ``finish``; an error answer given before a small body has arrived
        (``Content-Length`` of at most :data:`SMALL_BODY`, or a chunked body while it stays
        that small) goes out once that body is read.

        Every handler streams its body, so 401/403/404 are decided as soon as the head has
        arrived.  Answering and closing then, with body bytes still unread, makes the kernel
        reset the connection, and a client still sending its (small) body gets "connection
        reset" instead of the answer.  So the answer waits for the rest of such a body (at most
        :data:`SMALL_BODY_WAIT` seconds); a large one is not waited for (the client should
        ``Expect: 100-continue``)."""
        if self._finishing is not None:
            refused = self._guarded is not None and self._guarded.refused
            if not refused:
                if chunk is not None:
                    self.write(chunk)
                return self._finishing
            self._finishing.cancel()   # refused meanwhile (a stalled body): answered now
        elif not self._finished and self._waits_for_small_body():
            if chunk is not None:
                self.write(chunk)
            self._finishing = asyncio.ensure_future(self._finish_when_read())
            return self._finishing
        return super().finish(chunk)

    def _waits_for_small_body(self):
        # not for a 413: the body is refused for its size (the server's own limit may be
        # smaller than SMALL_BODY, and Tornado would drop the connection reading it);
        # the status first: this runs for every answer
        status = self.get_status()
        if status < 400 or status == 413:
            return False
        body = getattr(self.request, "_body_future", None)
        if body is None or body.done() or (self._guarded is not None and self._guarded.refused):
            return False
        headers = self.request.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return True   # of unknown length: waited for while it stays small (_finish_when_read)
        length = _guard.declared_length(headers)
        if length is None:
            return False
        limit = self._guarded.guard.limits.max_body_size if self._guarded is not None else None
        return 0 < length <= min(SMALL_BODY, limit if limit is not None else SMALL_BODY)

    async def _finish_when_read(self):
        body = self.request._body_future
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SMALL_BODY_WAIT
        while not body.done() and loop.time() < deadline:
            if self._guarded is not None and self._guarded.received > SMALL_BODY:
                break   # a chunked body that is not small after all: not waited for
            await asyncio.wait([body], timeout=0.05)   # never raises; the body future stays
        if not self._finished:
            try:
                super().finish()
            except Exception:  # noqa: BLE001 - the client went away meanwhile
                pass

    def request_body(self):
        """The whole request body (bytes) received by the default :meth:`data_received`."""
        return bytes(self._buffered) if self._buffered else b""

    def _ended(self):
        held, self._held = self._held, None
        if held is not None:
            held.end()

    def on_finish(self):
        if self._guarded is not None:
            self._guarded.release()
        self._ended()
        super().on_finish()

    def on_connection_close(self):
        guarded = self._guarded
        if guarded is not None:
            if guarded.last_data is not None and not (guarded.body_done or guarded.refused or self._finished):
                # no answer, so no access line: without this an upload cut by its client left no trace
                log.info("%s %s: the client closed the connection after %d of %s body bytes", self.request.method,
                         logged_path(self.request.path), guarded.received,
                         self.request.headers.get("Content-Length", "a chunked body's"))
            guarded.release()
        self._ended()
        super().on_connection_close()

    def flush(self, include_footers=False):
        return self.bounded(super().flush(include_footers))

    def bounded(self, future):
        """``future`` (of bytes being sent) failing with StreamClosedError, the connection
        closed, when the client takes nothing for the guard's ``send_timeout`` seconds."""
        if self._guarded is not None:
            return self._guarded.bounded_flush(future)
        return future

    def compute_etag(self):
        # Bodies are streamed with flush(); Tornado's body-hash ETag would be wrong.
        return None

    def fail(self, status, message, headers=None):
        """Raise :class:`HTTPFail` (for brevity in handlers)."""
        raise HTTPFail(status, message, headers)

    def answer_put(self, winner, applied, version):
        """The 200 of a PUT of ``version``: the version now stored, and whether it is this
        upload's.  The single server and the gateway answer alike through this.

        ``SHA256-Checksum`` (an addition; 2.x clients ignore it) names the content now
        stored, so a client that uploaded other content at the same version learns that its
        upload lost the tie (the ``Last-Modified`` is its own version either way).
        """
        self.set_header("Last-Modified", format_version(winner.version))
        if not winner.deleted and winner.sha256:
            self.set_header("SHA256-Checksum", winner.sha256)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if applied:
            self.finish("stored\n")
        elif winner.version == version:  # two different contents at one version: one fixed winner
            self.finish("another content of this version is stored (equal versions go by content); "
                        "not stored: upload again with a later version\n")
        else:
            self.finish("a newer version is stored\n")

    def answer_delete(self, winner, version):
        """The 200 of a DELETE at ``version``: the version now stored (the tombstone's, or
        newer data's).  The file counts as deleted when the winner is a tombstone of exactly
        ``version``, whether this request wrote it or a concurrent DELETE of the same version
        did first (both clients asked for the same outcome)."""
        self.set_header("Last-Modified", format_version(winner.version))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        deleted = winner.deleted and winner.version == version
        self.finish("deleted\n" if deleted else "a newer version is stored; nothing deleted\n")

    def log_exception(self, typ, value, tb):
        if isinstance(value, StreamClosedError):
            # the client went away (or was cut by the send timeout) mid-answer
            log.info("%s %s: connection closed before the answer was sent", self.request.method,
                     logged_path(self.request.path))
            return
        status = status_for(value) if value is not None else 500
        if status >= 500 and status != 507:
            log.error("error answering %s %s", self.request.method, logged_path(self.request.path),
                      exc_info=(typ, value, tb))
        else:
            log.info("%s %s -> %d: %s", self.request.method, logged_path(self.request.path), status,
                     one_line(getattr(value, "message", None) or value))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = None
        if isinstance(exc, HTTPFail):
            message = exc.message
            for k, v in exc.headers.items():
                self.set_header(k, v)
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message else None
        elif isinstance(exc, FiletrackerError):
            status_code = status_for(exc)
            self.set_status(status_code)
            message = str(exc)
        if not message:
            message = self._reason if status_code != 500 else "internal server error"
        if status_code == 500:
            message = "internal server error"  # never leak details of a bug
        line = one_line(message)
        # Drop headers of a half-built success answer (e.g. Last-Modified, Content-Range).
        for header in ("Last-Modified", "Content-Range", "Content-Length", "Content-Encoding"):
            if not (isinstance(exc, HTTPFail) and header in exc.headers):
                self.clear_header(header)
        self.set_header("X-Exception", line)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if self._body_unread():
            # Tornado closes the connection after this answer (it will not read the rest of the
            # body); say so, or a keep-alive client sends its next request into a closed socket.
            self.set_header("Connection", "close")
        if self.request.method != "HEAD":
            self.finish(line + "\n")
        else:
            self.finish()


    def _body_unread(self):
        """True when a request body was announced and not (yet) fully received."""
        return _guard.announces_body(self.request.headers) and \
            not (self._guarded is not None and self._guarded.body_done)


class NotFoundHandler(BaseHandler):
    """Default handler: every unknown path is a 404 with a message."""

    def prepare(self):
        super().prepare()
        raise HTTPFail(404, "%s: %s" % (NO_SUCH_ENDPOINT, one_line(self.request.path)))
