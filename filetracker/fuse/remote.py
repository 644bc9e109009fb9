"""The read side of the filetracker protocol, as the mount needs it.

The Client offers whole-file operations; a filesystem also needs one request
that answers both "what version" and "what size" (``HEAD``), the listing, and
byte ranges of large files.  This module speaks those directly with
``requests`` against PROTOCOL.md.  Every request is bounded by ``timeout``
(connect and each wait for bytes), so a server that is down or stopped makes
an operation fail with EIO within the timeout, never hang a shell.

Errors are :mod:`filetracker.errors` exceptions (404 -> NotFoundError, other
statuses and no answer -> RemoteError with ``status``), mapped to errno by
:mod:`.errnos`.  Sessions are per thread: the FUSE loop is multi-threaded and
a ``requests.Session`` is not meant to be shared across threads.
"""

import errno
import os
import re
import threading
import time
import urllib.parse

import requests

from filetracker.errors import FiletrackerError, NotFoundError, RemoteError
from filetracker.fuse.attrcache import TTLCache
from filetracker.fuse.pipeline import pipelined_heads
from filetracker.httpdate import format_version, parse_version
from filetracker.urls import safe_url, short_error

#: Bytes per write into the local file while streaming a range (bounds memory).
STREAM_CHUNK = 1 << 16
#: Listings ask for versions up to now + this, so files with versions slightly
#: in the future (rapid rewrites, clock skew) are listed too.
LIST_FUTURE_SLACK = 10 * 365 * 86400

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


def parse_self(value):
    """An ``X-List-Self`` value: ``(version, size)``, False (``none``) or None (absent, not understood).

    (The server's side is :mod:`filetracker.server.listing`; not imported
    here, so that the mount does not load the server.)
    """
    parts = (value or "").split()
    if parts == ["none"]:
        return False
    if len(parts) == 3 and parts[0] == "file" and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None


class StaleVersionError(RemoteError):
    """The server holds another version than the one being read (ESTALE)."""

    errno_hint = errno.ESTALE


class Remote:
    """HEAD, listing and ranged GET against ``base_url`` (thread-safe)."""

    def __init__(self, base_url, timeout=10.0, quiet_after_failure=0.0, caller=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        #: After a request made for a caller got no answer (timeout, refused
        #: connection), that caller's requests in the next this many seconds fail
        #: at once instead of waiting again: the steps of one operation (lookup,
        #: open, getattr; a folder, then its file) then wait one timeout in all,
        #: not one each.  Other callers ask the server as usual.
        self.quiet_after_failure = quiet_after_failure
        #: ``caller()`` names who a request is made for (a FUSE caller's thread id;
        #: 0 when unknown: then nothing is remembered).
        self.caller = caller
        self._silences = TTLCache(quiet_after_failure or 1.0, max_entries=10_000)  # caller -> message
        self._local = threading.local()
        #: Whether the server sends listings with details (None: not known yet).
        #: The mount then resolves an unknown path with one listing, not a HEAD
        #: followed by a listing.
        self.offers_details = None
        #: Bytes of file content received (ranges); for tests and statistics.
        self.bytes_received = 0
        self._count_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            # Plain bytes: sizes are logical and ranges apply to the content.
            s.headers["Accept-Encoding"] = "identity"
        return s

    def file_url(self, name):
        return self.base_url + "/files" + urllib.parse.quote(name, safe="/")

    def _request(self, method, url, what, **kwargs):
        self.check_answering(what)
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self._session().request(method, url, **kwargs)
        except requests.RequestException as e:
            message = "cannot reach %s: %s" % (safe_url(self.base_url), short_error(e))
            self._remember_silence(message)
            raise RemoteError("%s: %s" % (what, message), status=None) from None

    def _caller_key(self):
        if not (self.quiet_after_failure and self.caller):
            return 0
        try:
            return self.caller()
        except Exception:  # no FUSE request being served in this thread
            return 0

    def check_answering(self, what):
        """Raise RemoteError (no status) at once when the server just failed to answer this caller.

        See :attr:`quiet_after_failure`; a request made after that period asks again.
        """
        key = self._caller_key()
        silence = self._silences.get(key) if key else None
        if silence is not None:
            raise RemoteError("%s: %s (just now; not asked again yet)" % (what, silence), status=None)

    def _remember_silence(self, message):
        key = self._caller_key()
        if key:
            self._silences.put(key, message)

    @staticmethod
    def _raise_for(response, what):
        status = response.status_code
        if status < 400:
            return
        reason = response.headers.get("X-Exception") or response.reason or ""
        message = "%s: HTTP %d %s" % (what, status, reason)
        if status == 404:
            raise NotFoundError(message)
        raise RemoteError(message, status=status, reason=reason)

    @staticmethod
    def _version_of(response, what):
        value = response.headers.get("Last-Modified")
        if not value:
            raise RemoteError("%s: no Last-Modified in the answer" % what, status=response.status_code)
        return parse_version(value)

    # -- the operations ----------------------------------------------------------

    def ping(self):
        """Raise RemoteError unless the server answers ``GET /version/``."""
        response = self._request("GET", self.base_url + "/version/", "version check")
        with response:
            if response.status_code not in (200, 404):  # 404: a protocol-1 server
                self._raise_for(response, "version check")

    def stat(self, name):
        """``(version, logical size)`` of the newest version of ``name`` (one HEAD)."""
        what = "stat of %s" % name
        response = self._request("HEAD", self.file_url(name), what, allow_redirects=True)
        with response:
            self._raise_for(response, what)
            version = self._version_of(response, what)
            headers = response.headers
            if headers.get("Content-Encoding", "").lower() == "gzip":
                size = headers.get("Logical-Size")
            else:
                size = headers.get("Content-Length")
            try:
                return version, int(size)
            except (TypeError, ValueError):
                raise RemoteError("%s: the server did not say the size" % what,
                                  status=response.status_code) from None

    def stat_many(self, names, connections=2):
        """``{name: (version, size)}`` for the names that exist, by pipelined HEADs.

        Names whose answer did not arrive (or was not 200/404) are absent from
        the result; so are names that do not exist.
        """
        out = {}
        try:
            self.check_answering("stat of %d names" % len(names))
        except RemoteError:
            return out  # nothing arrives: the names are asked for one by one as usual
        answers = pipelined_heads(self.base_url, names, timeout=self.timeout or 10.0, connections=connections)
        for name, (status, headers) in answers.items():
            if status != 200:
                continue
            try:
                version = parse_version(headers.get("last-modified", ""))
                if headers.get("content-encoding", "").lower() == "gzip":
                    size = int(headers["logical-size"])
                else:
                    size = int(headers["content-length"])
            except (KeyError, ValueError, FiletrackerError):
                continue
            out[name] = (version, size)
        return out

    def list(self, folder):
        """Every name under ``folder`` (recursively), relative to it: ``(names, details)``.

        ``details`` is ``{relative name: (version, size)}`` when the server
        supports the listing with details (``details=1`` asked; answer header
        ``X-List-Format: details``; lines ``name TAB version TAB size``), else
        None and the caller HEADs the files it needs.  A server that does not
        know the parameter ignores it and sends plain names.
        """
        names, details, _itself = self.list_folder(folder)
        return names, details

    def list_folder(self, folder):
        """:meth:`list` plus what ``folder``'s own name is: ``(names, details, itself)``.

        ``itself`` is ``(version, size)`` when the (empty) listing says the
        name is a file, False when it says there is no such file, None when
        the answer does not say (header ``X-List-Self`` absent: a non-empty
        listing, or a server without the extension).  Sets
        :attr:`offers_details`.
        """
        cutoff = int(time.time()) + LIST_FUTURE_SLACK
        query = urllib.parse.urlencode({"last_modified": format_version(cutoff), "details": "1"})
        url = self.base_url + "/list" + urllib.parse.quote(folder, safe="/") + "?" + query
        what = "listing of %s" % folder
        response = self._request("GET", url, what)
        with response:
            if response.status_code == 404:
                return [], None, None
            self._raise_for(response, what)
            lines = [line for line in response.content.decode("utf-8", "replace").split("\n") if line]
            self.offers_details = response.headers.get("X-List-Format", "").lower() == "details"
            if not self.offers_details:
                return lines, None, None
            itself = parse_self(response.headers.get("X-List-Self")) if not lines else None
        names, details = [], {}
        for line in lines:
            # Names never contain control characters, so a TAB is a safe separator.
            name, _, rest = line.partition("\t")
            names.append(name)
            try:
                version, size = rest.split("\t")
                details[name] = (int(version), int(size))
            except ValueError:
                pass
        return names, details, itself

    def read_range(self, name, version, start, length, fd, file_offset=None):
        """Write bytes ``[start, start + length)`` of ``name`` into ``fd`` at ``file_offset``.

        ``file_offset`` defaults to ``start`` (a sparse local mirror of the
        file).  Raises :class:`StaleVersionError` when the server now holds
        another version than ``version``.  Returns the number of bytes written
        (less than ``length`` only at the end of the file).
        """
        if file_offset is None:
            file_offset = start
        what = "read of %s" % name
        headers = {"Range": "bytes=%d-%d" % (start, start + length - 1)}
        response = self._request("GET", self.file_url(name), what, headers=headers, stream=True)
        with response:
            if response.status_code == 416:
                # We only ask for bytes inside the version we read: it was replaced by a shorter one.
                raise StaleVersionError("%s: version %d was replaced" % (what, version), status=None)
            self._raise_for(response, what)
            got = self._version_of(response, what)
            if got != version:
                raise StaleVersionError("%s: version %d was replaced by %d" % (what, version, got), status=None)
            skip = 0
            if response.status_code == 206:
                m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != start:
                    raise RemoteError("%s: unexpected Content-Range %r" % (what, response.headers.get("Content-Range")))
            else:
                # The server ignored the range (allowed): skip to our bytes.
                skip = start
            written = 0
            chunks = response.raw.stream(STREAM_CHUNK, decode_content=True)
            while written < length:
                try:
                    chunk = next(chunks, b"")
                except Exception as e:  # urllib3 read timeouts, truncated bodies, resets
                    raise RemoteError("%s: transfer failed: %s" % (what, e), status=None) from None
                if not chunk:
                    break
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                chunk = chunk[:length - written]
                os.pwrite(fd, chunk, file_offset + written)  # local disk errors keep their errno
                written += len(chunk)
                with self._count_lock:
                    self.bytes_received += len(chunk)
            return written
