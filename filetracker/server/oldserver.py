"""A minimal streaming HTTP client of an old filetracker server (migration mode).

Used by ``filetracker-server --fallback-url`` (:mod:`filetracker.server.fallback`)
and usable by the cluster gateway's fallback: the old server's answer is read
head first, then its body chunk by chunk (``async for``), so a caller can pass
it on to its own client with flow control and one chunk of memory.  Only the
public protocol is used (``GET``/``HEAD /files/<name>``, ``GET /list/<folder>``),
so the old server may be a published 2.x server or one of ours.

:func:`stream_to_client` is the read-through itself: it answers a Tornado
handler's GET/HEAD from the old server (plain bytes: a 2.x server's gzip is
decoded on the way) and returns the version it served.
"""

import asyncio
import base64
import ssl
import time
from urllib.parse import quote, unquote, urlsplit

from tornado import httputil
from tornado.iostream import StreamClosedError

from filetracker.errors import InvalidVersionError
from filetracker.httpdate import format_version, parse_version
from filetracker.server.base import HTTPFail, one_line
from filetracker.server.streaming import GzipDecoder
from filetracker.urls import safe_url, short_error

#: a request carrying this header never falls back (an importer asks what the new store holds)
NO_FALLBACK_HEADER = "X-No-Fallback"
#: answers served from the old server carry this header (value: "1")
FALLBACK_MARK = "X-Fallback"
#: bytes read from the old server per step
CHUNK = 256 * 1024


class OldServerError(Exception):
    """The old server did not give a usable answer."""


class OldResponse:
    """One answer of the old server: ``code``, ``headers`` and the body by
    ``async for chunk in response.body()`` (raw bytes as sent, possibly
    gzip).  Every read waits at most the timeout (a stalled old server is
    cut off); a body that ends early raises :class:`OldServerError`.
    Always :meth:`close` it (the connection is not reused)."""

    def __init__(self, stream, code, headers, has_body, timeout):
        self._stream = stream
        self.code = code
        self.headers = headers
        self._has_body = has_body
        self._timeout = timeout

    async def _read(self, coro):
        try:
            return await asyncio.wait_for(coro, self._timeout)
        except StreamClosedError:
            raise OldServerError("the old server closed the connection mid-body") from None
        except TimeoutError:
            raise OldServerError("the old server stalled for %.0fs" % self._timeout) from None

    async def body(self):
        if not self._has_body:
            return
        stream = self._stream
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = await self._read(stream.read_until(b"\r\n", max_bytes=1024))
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise OldServerError("malformed chunked body from the old server") from None
                if size == 0:
                    while (await self._read(stream.read_until(b"\r\n", max_bytes=8192))).strip():
                        pass  # trailers
                    return
                while size > 0:
                    data = await self._read(stream.read_bytes(min(size, CHUNK), partial=True))
                    size -= len(data)
                    yield data
                await self._read(stream.read_bytes(2))
        elif self.headers.get("Content-Length") is not None:
            try:
                remaining = int(self.headers["Content-Length"])
            except ValueError:
                raise OldServerError("malformed Content-Length from the old server") from None
            while remaining > 0:
                data = await self._read(stream.read_bytes(min(remaining, CHUNK), partial=True))
                remaining -= len(data)
                yield data
        else:  # HTTP/1.0 style: the body ends when the connection does
            while True:
                try:
                    data = await asyncio.wait_for(stream.read_bytes(CHUNK, partial=True), self._timeout)
                except StreamClosedError:
                    return
                except TimeoutError:
                    raise OldServerError("the old server stalled for %.0fs" % self._timeout) from None
                yield data

    def close(self):
        self._stream.close()


class OldServer:
    """The old server at base URL ``url`` (http or https, with an optional path)."""

    def __init__(self, tcp, url, timeout):
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("fallback URL must be http(s)://host[:port][/path]: %s" % safe_url(url))
        self._tcp = tcp
        # in messages, which reach clients (X-Exception): never the credentials, which travel as HTTP Basic
        self.url = safe_url(url.rstrip("/"))
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._netloc = parts.netloc.rsplit("@", 1)[-1]
        self._base_path = parts.path
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.timeout = timeout
        # credentials in the URL (http://user:token@host) travel as HTTP Basic, as clients send them
        self._auth = ""
        if parts.username is not None:
            pair = "%s:%s" % (unquote(parts.username), unquote(parts.password or ""))
            self._auth = "Authorization: Basic %s\r\n" % base64.b64encode(pair.encode()).decode("ascii")

    #: seconds after a failure to reach the old server during which the checks made before
    #: writes are skipped (:func:`newer_version`): a hung old server must not add its timeout
    #: to every PUT and DELETE
    QUIET_AFTER_FAILURE = 10.0
    failed_at = None   # monotonic time of the last failure to reach it, None after a success

    def failed_recently(self):
        return self.failed_at is not None and time.monotonic() - self.failed_at < self.QUIET_AFTER_FAILURE

    async def request(self, method, name, endpoint="files", query=""):
        """Send ``method /<endpoint><name>[?query]`` and read the answer's head: an :class:`OldResponse`.

        Raises :class:`OldServerError` when the old server cannot be reached
        or answers nonsense.
        """
        try:
            resp = await self._request(method, name, endpoint, query)
        except OldServerError:
            self.failed_at = time.monotonic()
            raise
        self.failed_at = None
        return resp

    async def _request(self, method, name, endpoint, query):
        try:
            stream = await asyncio.wait_for(
                self._tcp.connect(self._host, self._port, ssl_options=self._ssl),
                self.timeout)
        except (OSError, TimeoutError, StreamClosedError) as exc:
            raise OldServerError("cannot connect to %s: %s" % (self.url, _why(exc))) from None
        try:
            stream.set_nodelay(True)
            path = "%s/%s%s%s" % (self._base_path, endpoint, quote(name, safe="/"),
                                  ("?" + query) if query else "")
            head = ("%s %s HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: gzip\r\nConnection: close\r\n%s\r\n"
                    % (method, path, self._netloc, self._auth))
            await asyncio.wait_for(stream.write(head.encode("latin-1")), self.timeout)
            data = await asyncio.wait_for(stream.read_until_regex(b"\r?\n\r?\n", max_bytes=64 * 1024),
                                          self.timeout)
            text = data.decode("latin-1")
            first, _, rest = text.partition("\n")
            start = httputil.parse_response_start_line(first.strip())
            headers = httputil.HTTPHeaders.parse(rest)
        except (OSError, TimeoutError, StreamClosedError, httputil.HTTPInputError, UnicodeError) as exc:
            stream.close()
            raise OldServerError("no valid answer from %s: %s" % (self.url, _why(exc))) from None
        except BaseException:
            stream.close()
            raise
        has_body = method != "HEAD" and start.code not in (204, 304) and start.code >= 200
        return OldResponse(stream, start.code, headers, has_body, self.timeout)


def _why(exc):
    """Why talking to the old server failed, in a few words: Tornado's StreamClosedError says
    only "Stream is closed"; the OS error behind it says "connection refused"."""
    if isinstance(exc, StreamClosedError):
        if exc.real_error is None:
            return "it closed the connection without answering"
        exc = exc.real_error
    if isinstance(exc, TimeoutError):
        return "timed out"
    return short_error(exc).lower()


class PlainDecoder:
    """Turns the old server's raw body (gzip or plain, per its headers) into plain chunks."""

    def __init__(self, headers):
        self._gz = GzipDecoder() if headers.get("Content-Encoding", "").lower() == "gzip" else None

    def feed(self, chunk):
        """Plain pieces of ``chunk``, decoded as they are taken (at most 1 MiB each), so a
        highly compressed chunk is never held decoded whole."""
        if self._gz is None:
            if chunk:
                yield chunk
            return
        try:
            yield from self._gz.feed(chunk)
        except ValueError as exc:
            raise OldServerError("corrupt gzip body from the old server: %s" % exc) from None

    def close(self):
        if self._gz is not None:
            try:
                self._gz.close()
            except ValueError as exc:
                raise OldServerError("corrupt gzip body from the old server: %s" % exc) from None


def logical_size(headers):
    """Plain size the old server announces, or None when unknown."""
    gz = headers.get("Content-Encoding", "").lower() == "gzip"
    value = headers.get("Logical-Size") if gz else headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def version_of(headers):
    try:
        return parse_version(headers.get("Last-Modified", ""))
    except InvalidVersionError:
        raise OldServerError("the old server sent no valid Last-Modified") from None


def wanted(request):
    """False when ``request`` asks not to fall back (:data:`NO_FALLBACK_HEADER`)."""
    return not request.headers.get(NO_FALLBACK_HEADER)


async def stream_to_client(old, handler, name, with_body, log=None):
    """Answer ``handler``'s GET (``with_body``) or HEAD for ``name`` from ``old`` (an :class:`OldServer`).

    The answer is 200 with the old version as ``Last-Modified``, the plain size
    as ``Content-Length`` when the old server tells it, :data:`FALLBACK_MARK`,
    and plain bytes (gzip decoded), streamed with flow control; ``Range`` is
    ignored (HTTP allows a 200 with the whole file).  Returns the version
    served once the answer is complete, or None when it was cut short (the
    client went away, or the old server failed mid-body: the connection is
    then closed, so the client sees a short body, never wrong bytes).

    Raises :class:`HTTPFail` 404 when the old server does not have ``name``,
    502 when it cannot be reached or answers nonsense before the first byte.
    """
    try:
        resp = await old.request("GET" if with_body else "HEAD", name)
    except OldServerError as exc:
        raise HTTPFail(502, "fallback to the old server failed: %s" % exc)
    started = False
    try:
        if resp.code == 404:
            raise HTTPFail(404, "file not found: %s" % name)
        if resp.code != 200:
            raise HTTPFail(502, "the old server answered %d %s"
                           % (resp.code, resp.headers.get("X-Exception", "")))
        try:
            version = version_of(resp.headers)
        except OldServerError as exc:
            raise HTTPFail(502, str(exc))
        handler.set_status(200)
        handler.set_header("Last-Modified", format_version(version))
        handler.set_header("Content-Type", "application/octet-stream")
        size = logical_size(resp.headers)
        if size is not None:
            handler.set_header("Content-Length", str(size))
        handler.clear_header("Accept-Ranges")
        handler.set_header(FALLBACK_MARK, "1")
        if with_body:
            decoder = PlainDecoder(resp.headers)
            async for raw in resp.body():
                for data in decoder.feed(raw):
                    started = True
                    handler.write(data)
                    await handler.flush()
            decoder.close()
    except StreamClosedError:
        if log is not None:
            log.info("fallback GET %s: the client went away", name)
        return None
    except OldServerError as exc:
        if not started:
            raise HTTPFail(502, "fallback to the old server failed: %s" % exc)
        if log is not None:
            log.error("fallback GET %s failed mid-body: %s; closing", name, exc)
        handler.request.connection.close()
        return None
    finally:
        resp.close()
    handler.finish()
    return version


async def old_version(old, name):
    """The version ``old`` holds for ``name`` (by HEAD), or None when it has none.

    Raises :class:`HTTPFail` 502 when the old server cannot tell.
    """
    try:
        resp = await old.request("HEAD", name)
    except OldServerError as exc:
        raise HTTPFail(502, str(exc))
    resp.close()
    if resp.code == 404:
        return None
    if resp.code != 200:
        raise HTTPFail(502, "the old server answered %d" % resp.code)
    try:
        return version_of(resp.headers)
    except OldServerError as exc:
        raise HTTPFail(502, str(exc))


async def newer_version(old, name, version, log):
    """The version ``old`` holds for ``name`` when it is newer than ``version``, else None.

    Asked before a write of ``name`` at ``version`` in migration mode: the old server's
    newer file is then copied in first, so that the write is judged by the merge rule
    against it, as it would be once imported (a PUT or DELETE older than the old file
    changes nothing, whether a read happened to copy the file before or not).  An old
    server that cannot answer is logged and lets the write go on (None), and so does one
    that failed to answer in the last :attr:`OldServer.QUIET_AFTER_FAILURE` seconds, unasked.
    """
    if old.failed_recently():
        return None
    try:
        held = await old_version(old, name)
    except HTTPFail as exc:
        log.warning("cannot ask %s for the version of %s before a write: %s", old.url, name, exc.message)
        return None
    return held if held is not None and held > version else None


async def delete_at(old, name, version, log):
    """Delete ``name`` on ``old`` at ``version`` (nothing when its version is newer); logged
    when the old server refuses or cannot answer.  True when it answered 200 or 404."""
    try:
        resp = await old.request("DELETE", name, query="last_modified=" + quote(format_version(version)))
    except OldServerError as exc:
        log.warning("delete of %s on %s failed: %s", name, old.url, exc)
        return False
    resp.close()
    if resp.code not in (200, 404):
        log.warning("delete of %s on %s: the old server answered %d", name, old.url, resp.code)
        return False
    return True


def name_from_2x(stored):
    """The name 2.x clients use for a file the 2.x server keeps, and lists, as ``stored``.

    The 2.x server takes a request's path as WSGI hands it over, its UTF-8 bytes read as
    Latin-1 (PEP 3333), and keeps that: ``/p/ü`` becomes the link ``links/p/Ã¼`` and
    is listed as ``/p/Ã¼``, while its clients reach it as ``/p/ü`` (every request is
    read the same way).  So when ``stored`` is Latin-1 text whose bytes are valid UTF-8,
    those are the real name; anything else (ASCII included) is the name as it is.
    """
    try:
        return stored.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return stored


async def list_names(old, folder, max_version):
    """Full names ``old`` lists under ``folder`` (recursively, as the 2.x listing
    does) with a version of at most ``max_version``, as its clients name them
    (:func:`name_from_2x`); a folder it does not have is empty.  Raises :class:`HTTPFail` 502 when it cannot answer: a listing silently
    missing the old files would mislead more than an error."""
    query = "last_modified=" + quote(format_version(max_version))
    path = folder if folder.endswith("/") else folder + "/"
    try:
        resp = await old.request("GET", path, endpoint="list", query=query)
        try:
            if resp.code in (400, 404):
                return []  # the 2.x server answers 400 for a folder it does not have
            if resp.code != 200:
                raise OldServerError("the old server answered %d to its listing" % resp.code)
            media = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media not in ("", "text/plain"):
                # a web page is not a listing: its lines would be listed as names
                raise OldServerError("its listing is %s, not text/plain: is the fallback URL a filetracker "
                                     "server?" % one_line(media))
            raw = bytearray()
            async for chunk in resp.body():
                raw += chunk
        finally:
            resp.close()
    except OldServerError as exc:
        raise HTTPFail(502, "listing the old server failed: %s" % exc)
    text = raw.decode("utf-8", "surrogateescape")
    return [path + name_from_2x(line.strip("\r")).lstrip("/") for line in text.split("\n") if line.strip("\r")]
