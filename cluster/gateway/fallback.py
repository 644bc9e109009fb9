"""Read-through to an old filetracker server during a migration (``--fallback-url``).

The gateway's GET/HEAD handler calls :meth:`Fallback.serve` when the cluster
holds *no record at all* for a name (a tombstone is a record: a name deleted
in the cluster never falls back, the delete wins).  The old server's answer
is streamed through to the client (not a redirect): plain bytes, gzip from a
2.x server decoded on the way, with flow control (the old server is read no
faster than the client takes the bytes), so memory per request is one chunk.

Unless ``copy`` is off (``--fallback-no-copy``), the file is then copied into
the cluster *in the background* with its original version, through the
gateway's own write path (:class:`cluster.gateway.writes.PutFanout`), so it
is replicated like any client write.  The merge rule protects newer data: a
file written or deleted by a client meanwhile keeps its newer record.

:meth:`Fallback.old_version` lets the DELETE handler delete a name that only
the old server holds: it writes a tombstone in the cluster, which then hides
the old copy for good.

Answers served from the old server carry ``X-Fallback: 1``; a request
with ``X-No-Fallback: 1`` never falls back (``filetracker-admin import``
sends it to learn what the *cluster* holds, so importing through a gateway
in migration mode works).

Only the public protocol of the old server is used (``GET``/``HEAD
/files/<name>``), so it works with a 2.x server or one of ours.
"""

import asyncio
import base64
import logging
import ssl
import time
from urllib.parse import quote, unquote, urlsplit

from tornado import httputil
from tornado.iostream import StreamClosedError

from cluster.gateway.writes import PutFanout
from filetracker.errors import InvalidVersionError
from filetracker.httpdate import format_version, parse_version
from filetracker.server.base import HTTPFail
from filetracker.server.streaming import GzipDecoder

log = logging.getLogger(__name__)

#: at most this many background copies run at once; more requests for
#: other names are not queued (a later read or the bulk import copies them)
MAX_COPIES = 4
#: a request carrying this header never falls back (the importer asks what the cluster holds)
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
            raise ValueError("fallback URL must be http(s)://host[:port][/path]: %r" % url)
        self._tcp = tcp
        self.url = url.rstrip("/")
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

    async def request(self, method, name, endpoint="files", query=""):
        """Send ``method /<endpoint><name>[?query]`` and read the answer's head: an :class:`OldResponse`.

        Raises :class:`OldServerError` when the old server cannot be reached
        or answers nonsense.
        """
        try:
            stream = await asyncio.wait_for(
                self._tcp.connect(self._host, self._port, ssl_options=self._ssl),
                self.timeout)
        except (OSError, TimeoutError, StreamClosedError) as exc:
            raise OldServerError("cannot connect to %s: %s" % (self.url, exc or type(exc).__name__)) from None
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
            raise OldServerError("no valid answer from %s: %s" % (self.url, exc or type(exc).__name__)) from None
        except BaseException:
            stream.close()
            raise
        has_body = method != "HEAD" and start.code not in (204, 304) and start.code >= 200
        return OldResponse(stream, start.code, headers, has_body, self.timeout)


class _Decoder:
    """Turns the old server's raw body (gzip or plain, per its headers) into plain chunks."""

    def __init__(self, headers):
        self._gz = GzipDecoder() if headers.get("Content-Encoding", "").lower() == "gzip" else None

    def feed(self, chunk):
        if self._gz is None:
            return [chunk] if chunk else []
        try:
            return list(self._gz.feed(chunk))
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


class Fallback:
    """Serves names the cluster does not hold from the old server at ``url``.

    ``services`` is the gateway's :class:`cluster.gateway.app.Services`
    (background tasks, view, node connections); ``copy`` enables the
    background copy into the cluster.
    """

    def __init__(self, services, url, copy=True, timeout=None):
        self._s = services
        self.url = url.rstrip("/")
        self.copy = copy
        self.old = OldServer(services.tcp, url, timeout or max(services.config.timeout, 10.0))
        self._copying = set()
        self.copies_done = 0
        self.copies_failed = 0

    # ------------------------------------------------------------------ reads

    @staticmethod
    def wanted(request):
        """False when the request asks not to fall back (``X-No-Fallback``)."""
        return not request.headers.get(NO_FALLBACK_HEADER)

    async def serve(self, handler, name, with_body):
        """Answer ``handler``'s GET/HEAD for ``name`` from the old server.

        Raises :class:`HTTPFail` 404 when the old server does not have it
        either, 502 when it cannot be reached or answers nonsense before the
        first byte.  A failure mid-body closes the client connection (the
        client sees a short body, never wrong bytes).  The fallback ignores
        ``Range``: the answer is always the whole file (200).
        """
        try:
            resp = await self.old.request("GET" if with_body else "HEAD", name)
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
                decoder = _Decoder(resp.headers)
                async for raw in resp.body():
                    for data in decoder.feed(raw):
                        started = True
                        handler.write(data)
                        await handler.flush()
                decoder.close()
        except StreamClosedError:
            log.info("fallback GET %s: the client went away", name)
            return
        except OldServerError as exc:
            if not started:
                raise HTTPFail(502, "fallback to the old server failed: %s" % exc)
            log.error("fallback GET %s failed mid-body: %s; closing", name, exc)
            handler.request.connection.close()
            return
        finally:
            resp.close()
        log.info("fallback %s %s@%d served from %s", "GET" if with_body else "HEAD", name, version, self.old.url)
        handler.finish()
        if self.copy:
            self.schedule_copy(name)

    async def old_version(self, name):
        """The version the old server holds for ``name`` (HEAD), or None when it has none.
        Raises :class:`HTTPFail` 502 when the old server cannot tell."""
        try:
            resp = await self.old.request("HEAD", name)
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

    async def list_names(self, folder, max_version):
        """Full names the old server lists under ``folder`` (recursively, as the 2.x
        listing does) with a version of at most ``max_version``.  A folder it does not
        have is empty.  Raises :class:`HTTPFail` 502 when it cannot answer: a listing
        silently missing the old files would mislead more than an error."""
        query = "last_modified=" + quote(format_version(max_version))
        path = folder if folder.endswith("/") else folder + "/"
        try:
            resp = await self.old.request("GET", path, endpoint="list", query=query)
            try:
                if resp.code in (400, 404):
                    return []  # the 2.x server answers 400 for a folder it does not have
                if resp.code != 200:
                    raise OldServerError("the old server answered %d to its listing" % resp.code)
                raw = bytearray()
                async for chunk in resp.body():
                    raw += chunk
            finally:
                resp.close()
        except OldServerError as exc:
            raise HTTPFail(502, "listing the old server failed: %s" % exc)
        text = raw.decode("utf-8", "surrogateescape")
        return [path + line.lstrip("/") for line in text.split("\n") if line.strip("\r")]

    # ------------------------------------------------------------------ background copy

    def schedule_copy(self, name):
        """Start copying ``name`` into the cluster unless a copy of it runs already
        or :data:`MAX_COPIES` run (a later read, or the bulk import, will copy it)."""
        if name in self._copying or len(self._copying) >= MAX_COPIES:
            return False
        self._copying.add(name)
        self._s.spawn(self._copy(name))
        return True

    async def _copy(self, name):
        started = time.monotonic()
        fanout = None
        resp = None
        try:
            await self._s.view.get_ring()
            resp = await self.old.request("GET", name)
            if resp.code != 200:
                raise OldServerError("the old server answered %d" % resp.code)
            version = version_of(resp.headers)
            headers = httputil.HTTPHeaders()
            size = logical_size(resp.headers)
            if size is not None:
                headers["Content-Length"] = str(size)
            fanout = PutFanout(self._s, name, version, headers)
            if not await fanout.open():
                raise OldServerError("not enough replicas reachable")
            decoder = _Decoder(resp.headers)
            async for raw in resp.body():
                for data in decoder.feed(raw):
                    await fanout.feed(data)
            decoder.close()
            outcome = await fanout.finish()
            fanout = None
            if outcome.status != 200:
                raise OldServerError("cluster write failed: %d %s" % (outcome.status, outcome.message))
            self.copies_done += 1
            winner = outcome.record
            log.info("fallback copy of %s@%d into the cluster: %s (%.2fs)", name, version,
                     "stored" if winner.version == version and not winner.deleted
                     else "a newer record wins (version %d%s)" % (winner.version,
                                                                  ", deleted" if winner.deleted else ""),
                     time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - best effort: a later read or the import copies it
            self.copies_failed += 1
            log.warning("fallback copy of %s failed: %s", name, exc or type(exc).__name__)
        finally:
            if fanout is not None:
                fanout.abort()
            if resp is not None:
                resp.close()
            self._copying.discard(name)
