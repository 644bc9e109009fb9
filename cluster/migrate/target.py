"""The target of a migration: any endpoint of the public protocol (a gateway, or our single server).

Writes go through the public ``PUT /files/<name>?last_modified=<version>``,
so the cluster applies its own rules: the write is replicated, and the merge
rule keeps whatever is newer.  A copy never overwrites a file a client wrote
during the migration, and never undoes a delete (the tombstone wins and the
endpoint answers 409).
"""

import hashlib
import threading
from dataclasses import dataclass
from urllib.parse import quote

import requests

from filetracker.errors import InvalidVersionError
from filetracker.httpdate import format_version, parse_version

CHUNK = 256 * 1024
#: asks a gateway in migration mode (``--fallback-url``) not to answer from the old server:
#: the importer wants to know what the *cluster* holds
NO_FALLBACK = {"X-No-Fallback": "1"}
#: a gateway marks answers it served from the old server with this header
FALLBACK_MARK = "X-Fallback"


class TargetError(Exception):
    """The target failed for one file."""


@dataclass(frozen=True)
class PutResult:
    """``outcome``: ``copied`` (our version is now stored), ``newer`` (the
    target kept a newer version) or ``deleted`` (a delete at a version not
    older than ours wins).  ``version`` is what the target now holds."""

    outcome: str
    version: int


class _Body:
    """A file-like view of an iterator of chunks, with a known length, for ``requests``
    (so the upload carries ``Content-Length`` and is streamed, never held whole)."""

    def __init__(self, chunks, length):
        self._it = iter(chunks)
        self._length = length
        self._cur = b""
        self._pos = 0

    def __len__(self):
        return self._length

    def read(self, n=-1):
        if n is None or n < 0:
            data = self._cur[self._pos:] + b"".join(self._it)
            self._cur, self._pos = b"", 0
            return data
        while self._pos >= len(self._cur):
            nxt = next(self._it, None)
            if nxt is None:
                return b""
            self._cur, self._pos = nxt, 0
        data = self._cur[self._pos:self._pos + n]
        self._pos += len(data)
        return data


class HttpTarget:
    """The cluster (or a single server) at base URL ``url``; thread-safe."""

    def __init__(self, url, timeout=120.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _file_url(self, name):
        return "%s/files%s" % (self.url, quote(name, safe="/"))

    def version(self, name):
        """The version the target serves for ``name``, or None (absent or deleted)."""
        try:
            r = self._session().head(self._file_url(name), timeout=self.timeout, headers=NO_FALLBACK)
        except requests.RequestException as exc:
            raise TargetError("HEAD failed: %s" % exc) from None
        if r.status_code == 404 or r.headers.get(FALLBACK_MARK):
            return None
        if r.status_code != 200:
            raise TargetError("HEAD answered %d %s" % (r.status_code, r.headers.get("X-Exception", "")))
        return _version(r)

    def put(self, name, version, chunks, size=None, sha256=None):
        """Store the plain bytes of ``chunks`` as ``name`` at ``version``.

        ``size`` known: sent with Content-Length; otherwise chunked.
        ``sha256`` known: sent as ``SHA256-Checksum`` so the target refuses a
        corrupt body.  Returns :class:`PutResult`; raises :class:`TargetError`.
        """
        # the importer copies from the old server itself: a gateway in migration mode need
        # not ask it about each name first (Fallback.copy_if_newer)
        headers = {"Content-Type": "application/octet-stream", **NO_FALLBACK}
        if sha256:
            headers["SHA256-Checksum"] = sha256
        body = _Body(chunks, size) if size is not None else iter(chunks)
        try:
            r = self._session().put(self._file_url(name), params={"last_modified": format_version(version)},
                                    data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            cause = exc.__context__ if isinstance(exc.__context__, Exception) else exc
            raise TargetError("PUT failed: %s" % cause) from None
        if r.status_code == 409:
            held = r.headers.get("Last-Modified")
            return PutResult("deleted", _version(r) if held else version)
        if r.status_code != 200:
            raise TargetError("PUT answered %d %s" % (r.status_code, r.headers.get("X-Exception", "")))
        held = _version(r)
        return PutResult("newer" if held > version else "copied", held)

    def fetch_digest(self, name):
        """``(version, sha256, size)`` of what the target serves for ``name`` (GET and hash), or None."""
        try:
            r = self._session().get(self._file_url(name), timeout=self.timeout, stream=True,
                                    headers=NO_FALLBACK)
        except requests.RequestException as exc:
            raise TargetError("GET failed: %s" % exc) from None
        with r:
            if r.status_code == 404 or r.headers.get(FALLBACK_MARK):
                return None
            if r.status_code != 200:
                raise TargetError("GET answered %d %s" % (r.status_code, r.headers.get("X-Exception", "")))
            version = _version(r)
            h = hashlib.sha256()
            size = 0
            try:
                for chunk in r.iter_content(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
            except requests.RequestException as exc:
                raise TargetError("reading the body failed: %s" % exc) from None
        return version, h.hexdigest(), size


def _version(response):
    try:
        return parse_version(response.headers.get("Last-Modified", ""))
    except InvalidVersionError:
        raise TargetError("no valid Last-Modified in the answer") from None
