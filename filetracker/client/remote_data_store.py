"""A :class:`DataStore` on a filetracker server, over the HTTP protocol.

See ``PROTOCOL.md``: files live under ``<base_url>/files/<name>``, versions
travel as HTTP dates.  Bodies are streamed both ways (a file is never held in
memory).  Uploads are gzip-compressed into a temporary file first when the
server speaks protocol 2 (``Content-Encoding: gzip`` + ``Logical-Size`` +
``SHA256-Checksum``).  Errors become :mod:`filetracker.errors`:
404 -> :class:`NotFoundError`, 409 -> :class:`VersionConflictError`,
anything else (and no answer at all) -> :class:`RemoteError`.

Credentials may be given in the URL (``http://user:token@host:port``);
``requests`` sends them as HTTP Basic auth.
"""

import gzip
import hashlib
import os
import tempfile
import threading
import time
import urllib.parse

import requests

from filetracker.client import implicit
from filetracker.client._files import CHUNK, atomic_write_stream
from filetracker.client.data_store import DataStore
from filetracker.errors import (
    ContentConflictError,
    NotFoundError,
    RemoteError,
    VersionConflictError,
    VersionNotFoundError,
)
from filetracker.httpdate import format_version, parse_version
from filetracker.names import check_folder, check_name, versioned_name
from filetracker.urls import safe_url, short_error

#: Protocol versions this client speaks.
SUPPORTED_PROTOCOLS = (1, 2)
#: Level of the gzip compression of uploads: zlib's default, a fair speed/size trade.
GZIP_LEVEL = 6


def _reason(response):
    return response.headers.get("X-Exception") or response.reason or ""


def said_version(response):
    """The version in ``response``'s ``Last-Modified``, or None when it says none (or garbage)."""
    try:
        return parse_version(response.headers.get("Last-Modified") or "")
    except ValueError:
        return None


def raise_for_response(response, what):
    """Raise the :mod:`filetracker.errors` exception for an error ``response``."""
    status = response.status_code
    if status < 400:
        return
    reason = _reason(response)
    message = "%s: HTTP %d: %s" % (what, status, reason) if reason else "%s: HTTP %d" % (what, status)
    if status == 404:
        raise NotFoundError(message, reason=reason)
    if status == 409:
        raise VersionConflictError(message, version=said_version(response))
    raise RemoteError(message, status=status, reason=reason)


class _Progress:
    """A no-op progress sink (the CLI plugs a tqdm bar in its place)."""

    def update(self, n):
        pass

    def close(self):
        pass


class _ReadWithProgress:
    """A file wrapper that reports how much has been read (for upload progress)."""

    def __init__(self, f, progress):
        self._f = f
        self._progress = progress

    def read(self, n=-1):
        data = self._f.read(n)
        self._progress.update(len(data))
        return data

    def __len__(self):  # lets requests send Content-Length
        return os.fstat(self._f.fileno()).st_size - self._f.tell()


def _decoded_length(headers):
    """The body's length once decoded, from the answer's headers; None when they do not say."""
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding == "gzip":
        value = headers.get("Logical-Size")
    elif not encoding:
        value = headers.get("Content-Length")
    else:
        return None   # another encoding: its decoded length is not said
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class ResponseStream:
    """A read-only binary file over a streamed HTTP response body (decoded).

    ``read(n)`` returns at most ``n`` bytes; ``read()`` the rest.  Closing it
    releases the connection.  A truncated body raises :class:`RemoteError`,
    also one that ends with its connection (no ``Content-Length``, as a proxy
    may send it): the decoded bytes are counted against ``Logical-Size`` (gzip)
    or ``Content-Length`` (plain), as a cut gzip stream decodes without error.
    """

    def __init__(self, response, what):
        self._response = response
        self._iter = response.iter_content(CHUNK)
        self._buf = b""
        self._what = what
        self._expected = _decoded_length(response.headers)
        self._received = 0
        self.closed = False

    def _next_chunk(self):
        try:
            chunk = next(self._iter)
        except StopIteration:
            if self._expected is not None and self._received != self._expected:
                expected, self._expected = self._expected, None   # said once
                raise RemoteError("%s: transfer cut short: %d of %d bytes"
                                  % (self._what, self._received, expected)) from None
            return b""
        except requests.RequestException as e:
            raise RemoteError("%s: transfer failed: %s" % (self._what, e)) from None
        self._received += len(chunk)
        return chunk

    def read(self, n=-1):
        if n is None or n < 0:
            parts = [self._buf]
            self._buf = b""
            while True:
                chunk = self._next_chunk()
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        while len(self._buf) < n:
            chunk = self._next_chunk()
            if not chunk:
                break
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def readable(self):
        return True

    def close(self):
        if not self.closed:
            self.closed = True
            self._response.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        while True:
            chunk = self.read(CHUNK)
            if not chunk:
                return
            yield chunk


class RemoteDataStore(DataStore):
    """The protocol client; thread-safe (one pooled ``requests.Session``).

    Safe across ``fork()`` too: a child process (a multiprocessing or Celery
    worker) makes its own session on its first request instead of using the
    parent's pooled connections, over which both would read each other's
    answers.  A ``session`` given by the caller is used as it is: keep one
    per process.

    ``timeout``: seconds to wait for a connection or for the next bytes of an
    answer (``None``: wait forever, as the 2.x client does).
    ``on_negotiated(protocol)``: called once when the protocol is settled.
    ``progress_factory(total_bytes, description)``: returns an object with
    ``update(n)`` and ``close()`` to report transfer progress.
    """

    def __init__(self, base_url, timeout=None, session=None, on_negotiated=None, progress_factory=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self._own_session = session is None
        self._session_pid = os.getpid()
        self.on_negotiated = on_negotiated
        self.progress_factory = progress_factory
        self._protocol = None
        self._protocol_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------

    def _file_url(self, uname):
        return self.base_url + "/files" + urllib.parse.quote(uname, safe="/")

    def _request(self, method, url, what, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        if self._own_session and self._session_pid != os.getpid():
            # forked: the pooled connections are sockets the parent holds too; the child opens
            # its own (the old ones close in this process only, the parent's stay open)
            self.session = requests.Session()
            self._session_pid = os.getpid()
        try:
            return self.session.request(method, url, **kwargs)
        except requests.RequestException as e:
            raise RemoteError("%s: cannot reach %s: %s" % (what, safe_url(self.base_url), short_error(e)),
                              status=None) from None

    def _progress(self, total, description):
        if self.progress_factory is None:
            return _Progress()
        return self.progress_factory(total, description)

    def protocol_version(self):
        """The protocol version agreed with the server (asked once, then remembered)."""
        with self._protocol_lock:
            if self._protocol is None:
                response = self._request("GET", self.base_url + "/version/", "protocol negotiation")
                if response.status_code == 404:
                    offered = {1}
                else:
                    raise_for_response(response, "protocol negotiation")
                    try:
                        offered = set(response.json()["protocol_versions"])
                    except (ValueError, KeyError, TypeError):
                        raise RemoteError("protocol negotiation: malformed answer from /version/",
                                          status=response.status_code) from None
                common = offered.intersection(SUPPORTED_PROTOCOLS)
                if not common:
                    raise RemoteError("no common protocol version: we speak %s, the server %s"
                                      % (sorted(SUPPORTED_PROTOCOLS), sorted(offered)))
                self._protocol = max(common)
                if self.on_negotiated is not None:
                    self.on_negotiated(self._protocol)
            return self._protocol

    def _with_version(self, url, headers, version):
        """Attach ``version`` as the protocol wants: query parameter (2) or header (1)."""
        date = format_version(version)
        if self.protocol_version() == 1:
            return url, dict(headers, **{"Last-Modified": date})
        return url + "?" + urllib.parse.urlencode({"last_modified": date}), headers

    @staticmethod
    def _last_modified(response):
        value = response.headers.get("Last-Modified")
        if not value:
            raise RemoteError("the server sent no Last-Modified header", status=response.status_code)
        return parse_version(value)

    def _check_version(self, response, uname, version):
        remote = self._last_modified(response)
        if version is not None and remote != version:
            response.close()
            raise VersionNotFoundError("version %d of %s is not available (the server has version %d)"
                                % (version, uname, remote))
        return remote

    # -- uploads ---------------------------------------------------------------

    def add_file(self, name, filename, compress_hint=True):
        """Upload ``filename`` as ``name``; returns the versioned name the server now holds.

        Without a version in ``name`` the current time is sent (as the 2.x
        client does); if another content or a delete took that second, the next
        one (so the later upload wins, as with 2.x).  When the server holds a newer version,
        that one stays and its versioned name is returned.  With a version given,
        another content at that version raises :class:`ContentConflictError`.
        """
        uname, version = check_name(name)
        if version is not None:
            return self._add_file(uname, version, filename, compress_hint)
        return self.add_file_now(uname, filename, compress_hint)[0]

    def add_file_now(self, uname, filename, compress_hint=True):
        """Upload ``filename`` as ``uname`` without a version given: ``(versioned name the
        server holds, True when that is this upload)``.

        The current second is sent, as the 2.x client does.  If another content or a delete
        took that second, or an upload without a version went a second up before (a version
        ahead of the clock), the upload goes past it, waiting for the clock when that would
        put it more than a second ahead (:mod:`filetracker.client.implicit`), so the later
        upload wins, as with 2.x.  A newer version the server keeps otherwise stays (further
        ahead: someone's explicit version or clock), and its name comes back with False, as
        does the winner's when writers racing on the name keep winning the chase.
        """
        version = int(time.time())
        for attempt in range(implicit.ATTEMPTS):
            time.sleep(implicit.send_delay(version, time.time()))
            try:
                vname = self._add_file(uname, version, filename, compress_hint)
            except VersionConflictError as e:
                # another upload of this very version won the tie, or a delete not older did
                nxt = implicit.after_conflict(version, e.version, int(time.time()))
                if nxt is None or attempt == implicit.ATTEMPTS - 1:
                    if isinstance(e, ContentConflictError):
                        # writers racing on this name kept winning: the last one's upload
                        # stays, as a newer version kept does
                        return versioned_name(uname, version), False
                    raise
                version = nxt
                continue
            stored = check_name(vname)[1]
            if stored == version:
                return vname, True
            if not implicit.goes_past(stored, int(time.time())):
                break
            version = stored + 1
        return vname, False

    def _add_file(self, uname, version, filename, compress_hint):
        what = "upload of %s" % uname
        headers = {}
        size = os.path.getsize(filename)
        with open(filename, "rb") as f:
            if self.protocol_version() >= 2:
                with tempfile.TemporaryFile() as tmp:
                    digest = self._digest_and_maybe_gzip(f, tmp if compress_hint else None)
                    headers["SHA256-Checksum"] = digest
                    if compress_hint:
                        headers["Content-Encoding"] = "gzip"
                        headers["Logical-Size"] = str(size)
                        tmp.seek(0)
                        return self._put(uname, version, tmp, headers, size, what, digest)
                    f.seek(0)
                    return self._put(uname, version, f, headers, size, what, digest)
            return self._put(uname, version, f, headers, size, what)

    @staticmethod
    def _digest_and_maybe_gzip(f, out):
        """SHA-256 of ``f``'s content; also gzip it into ``out`` when given (one pass)."""
        sha = hashlib.sha256()
        gz = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) if out else None
        try:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                sha.update(chunk)
                if gz is not None:
                    gz.write(chunk)
        finally:
            if gz is not None:
                gz.close()
        return sha.hexdigest()

    def _put(self, uname, version, body, headers, logical_size, what, digest=None):
        """PUT ``body``; the versioned name the server now holds.  With the content's
        ``digest``, :class:`VersionConflictError` when the server answers that another
        content of this very version is stored (the tie went the other way: ours was not
        stored, and the returned name would name someone else's content)."""
        url, headers = self._with_version(self._file_url(uname), headers, version)
        progress = self._progress(logical_size, "put " + uname)
        try:
            if hasattr(body, "fileno"):
                body = _ReadWithProgress(body, progress)
            response = self._request("PUT", url, what, data=body, headers=headers)
        finally:
            progress.close()
        with response:
            raise_for_response(response, what)
            stored = self._last_modified(response)
            kept = response.headers.get("SHA256-Checksum", "").strip().lower()
            if digest is not None and stored == version and kept and kept != digest:
                raise ContentConflictError(
                    "%s: another content of version %d is stored (equal versions keep one fixed "
                    "content); this upload was not stored: upload it again with a later version"
                    % (what, version), version=version)
            return versioned_name(uname, stored)

    def add_stream(self, name, stream):
        """Upload from a stream (chunked transfer, no compression, no checksum)."""
        uname, version = check_name(name)
        if version is None:
            version = int(time.time())

        def chunks():
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    return
                yield chunk

        return self._put(uname, version, chunks(), {}, None, "upload of %s" % uname)

    # -- downloads -------------------------------------------------------------

    def get_stream(self, name):
        uname, version = check_name(name)
        what = "download of %s" % name
        response = self._request("GET", self._file_url(uname), what, stream=True)
        try:
            raise_for_response(response, what)
            remote = self._check_version(response, uname, version)
        except BaseException:
            response.close()
            raise
        return ResponseStream(response, what), versioned_name(uname, remote)

    def get_file(self, name, filename, before_visible=None):
        """Download to ``filename`` (temporary file + rename; never whole in memory).

        ``before_visible(f)``: called with the complete download open for reading before it
        is renamed to ``filename`` (:func:`~filetracker.client._files.atomic_write_stream`)."""
        stream, vname = self.get_stream(name)
        with stream:
            size = stream._response.headers.get("Logical-Size") or stream._response.headers.get("Content-Length")
            progress = self._progress(int(size) if size and size.isdigit() else None, "get " + vname)
            try:
                atomic_write_stream(filename, stream, progress=progress.update, fsync=False,
                                    before_visible=before_visible)
            finally:
                progress.close()
        return vname

    def _head(self, name):
        uname, version = check_name(name)
        what = "%s" % name
        response = self._request("HEAD", self._file_url(uname), what, allow_redirects=True)
        response.close()
        return response, uname, version

    def exists(self, name):
        response, uname, version = self._head(name)
        if response.status_code == 404:
            return False
        raise_for_response(response, name)
        return version is None or self._last_modified(response) == version

    def file_version(self, name):
        response, _, _ = self._head(name)
        raise_for_response(response, name)
        return self._last_modified(response)

    def file_size(self, name):
        """The logical size: ``Logical-Size`` for a gzip answer, else ``Content-Length``."""
        response, uname, version = self._head(name)
        raise_for_response(response, name)
        self._check_version(response, uname, version)
        if response.headers.get("Content-Encoding", "").lower() == "gzip":
            value = response.headers.get("Logical-Size")
        else:
            value = response.headers.get("Content-Length")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise RemoteError("the server did not say the size of %s" % name,
                              status=response.status_code) from None

    # -- deletes and listings --------------------------------------------------

    def delete_file(self, name):
        """Delete the file on the server (with a version: only if not older than the stored one)."""
        uname, version = check_name(name)
        if version is not None:
            self._delete(uname, version)
            return
        # Without a version: now, or the newer version kept instead, when it is one an
        # upload without a version moved ahead of the clock (filetracker.client.implicit);
        # at an equal version the delete wins.
        version = int(time.time())
        for _attempt in range(implicit.ATTEMPTS):
            kept = self._delete(uname, version)
            if kept is None or kept <= version or not implicit.goes_past(kept, int(time.time())):
                return
            version = kept

    def _delete(self, uname, version):
        """DELETE at ``version``; the version the server says it now holds (None if unsaid)."""
        what = "delete of %s" % uname
        url, headers = self._with_version(self._file_url(uname), {}, version)
        with self._request("DELETE", url, what, headers=headers) as response:
            raise_for_response(response, what)
            return said_version(response)

    def list_files(self, version=None, subpath="", absolute_paths=False):
        """Names under ``subpath`` whose version is at most ``version`` (default: now).

        Names are relative to ``subpath`` as the server sends them.  With
        ``absolute_paths`` and a non-root ``subpath`` they are prefixed with the
        subpath *without its leading slash* (``a/b/x``), as the 2.x client does.
        """
        folder = check_folder("/" + subpath.lstrip("/")) if subpath else "/"
        if version is None:
            version = int(time.time())
        url = self.base_url + "/list" + urllib.parse.quote(folder, safe="/")
        url, headers = self._with_version(url, {}, version)
        what = "listing of %s" % folder
        with self._request("GET", url, what, headers=headers) as response:
            raise_for_response(response, what)
            names = response.content.decode("utf-8").split("\n")
        if names and names[-1] == "":
            names.pop()
        if absolute_paths and folder != "/":
            prefix = folder.strip("/") + "/"
            names = [prefix + n for n in names]
        return names
