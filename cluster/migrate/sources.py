"""Sources of a migration: the files of a filetracker 2.x store.

Two sources give the same :class:`Entry` objects and :class:`OpenFile`
streams (plain bytes, never gzip):

* :class:`HttpSource` talks to a running 2.x server: its recursive listing
  ``GET /list/<prefix>`` gives the names, ``HEAD``/``GET /files/<name>`` the
  version (``Last-Modified``) and the content (gzip, ``Logical-Size``).
* :class:`DirSource` reads a stopped 2.x server's data folder: every
  ``links/<name>`` symlink is a file, its own mtime (lstat) is the version
  and its target ``blobs/<xx>/<sha256>`` the gzip-compressed content, named
  by the SHA-256 of the uncompressed bytes (COMPAT.md).  ``db/`` and
  ``locks/`` are not needed.

Both give names as 2.x clients knew them (:func:`name_from_2x`: the 2.x server
keeps non-ASCII names in a mangled form).

Both are safe to use from several threads at once (one HTTP session per
thread).
"""

import hashlib
import os
import threading
from dataclasses import dataclass
from urllib.parse import quote

import requests

from filetracker.errors import InvalidVersionError
from filetracker.httpdate import format_version, parse_version
from filetracker.server.oldserver import name_from_2x
from filetracker.server.streaming import GzipDecoder
from filetracker.urls import safe_url, short_error

#: bytes read from a source per step (bounded memory per transfer)
CHUNK = 256 * 1024
#: a listing cut-off far in the future: list every file, whatever its version
LIST_ALL_UNTIL = 4102444800  # 2100-01-01


class SourceError(Exception):
    """The source failed for one file (network, bad answer, corrupt blob)."""


class Vanished(SourceError):
    """The file was listed but is gone now (deleted on the old server meanwhile)."""


@dataclass(frozen=True)
class Entry:
    """One file of the old store.  ``version`` and ``sha256`` are None when
    the source only learns them by asking (HTTP)."""

    name: str
    version: int | None = None
    sha256: str | None = None
    blob: str | None = None  # DirSource: path of the gzip blob


def normalize_prefix(prefix):
    """``"/a/b/"`` -> ``"/a/b"``; ``None``/``""``/``"/"`` -> ``""`` (everything)."""
    prefix = (prefix or "").strip()
    if not prefix or prefix == "/":
        return ""
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    if ".." in prefix.split("/"):
        raise ValueError("a prefix may not contain '..': %r" % prefix)
    return prefix.rstrip("/")


class OpenFile:
    """A file being read: ``version``, ``size`` (logical, or None when unknown
    before the end), ``expected_sha256`` (None when the source cannot tell)
    and the plain bytes by iteration.  Iterating also computes ``sha256`` and
    ``bytes_read``; a blob whose content does not match its expected digest
    raises :class:`SourceError` at the end (so the target sees a short or
    refused upload, never a silent corruption).
    """

    def __init__(self, version, size, chunks, expected_sha256=None, close=None):
        self.version = version
        self.size = size
        self.expected_sha256 = expected_sha256
        self._chunks = chunks
        self._close = close
        self._hash = hashlib.sha256()
        self.bytes_read = 0
        self.sha256 = None
        #: the SourceError that ended the iteration, if any (the HTTP library
        #: sending the body may wrap it in its own exception)
        self.error = None

    def __iter__(self):
        try:
            for chunk in self._chunks:
                self._hash.update(chunk)
                self.bytes_read += len(chunk)
                yield chunk
            self.sha256 = self._hash.hexdigest()
            if self.size is not None and self.bytes_read != self.size:
                raise SourceError("size mismatch: read %d bytes, expected %d" % (self.bytes_read, self.size))
            if self.expected_sha256 and self.sha256 != self.expected_sha256:
                raise SourceError("content does not match its SHA-256 %s (blob corrupt?)"
                                  % self.expected_sha256)
        except SourceError as exc:
            self.error = exc
            raise

    def digest(self):
        """Read everything (discarding it) and return the SHA-256 hex digest."""
        for _ in self:
            pass
        return self.sha256

    def close(self):
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _gunzip(chunks):
    decoder = GzipDecoder()
    try:
        for data in chunks:
            yield from decoder.feed(data)
        decoder.close()
    except ValueError as exc:
        raise SourceError(str(exc)) from None


class HttpSource:
    """A running 2.x server at ``url`` (its base URL), optionally only ``prefix``."""

    kind = "http"

    def __init__(self, url, prefix="", timeout=60.0):
        self.url = url.rstrip("/")
        self.prefix = normalize_prefix(prefix)
        self.timeout = timeout
        self._local = threading.local()

    def describe(self):
        return safe_url(self.url) + (" (prefix %s)" % self.prefix if self.prefix else "")

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _file_url(self, name):
        return "%s/files%s" % (self.url, quote(name, safe="/"))

    def entries(self):
        """Every name under the prefix (the 2.x listing is recursive), as a list of Entry."""
        url = "%s/list%s/" % (self.url, quote(self.prefix, safe="/"))
        try:
            r = self._session().get(url, params={"last_modified": format_version(LIST_ALL_UNTIL)},
                                    timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise SourceError("cannot list %s: %s" % (safe_url(url), short_error(exc))) from None
        with r:
            if r.status_code == 400 and self.prefix:
                # the 2.x server answers 400 for a folder that does not exist: nothing to copy
                return []
            if r.status_code != 200:
                raise SourceError("cannot list %s: %d %s"
                                  % (safe_url(url), r.status_code, r.headers.get("X-Exception", "")))
            names = []
            for line in r.iter_lines(chunk_size=CHUNK, decode_unicode=False):
                rel = line.decode("utf-8", "surrogateescape").strip("\r")
                if rel:
                    names.append(Entry(name="%s/%s" % (self.prefix, name_from_2x(rel).lstrip("/"))))
        names.sort(key=lambda e: e.name)
        return names

    def version(self, entry):
        """The file's current version on the old server (HEAD), or raise :class:`Vanished`."""
        try:
            r = self._session().head(self._file_url(entry.name), timeout=self.timeout)
        except requests.RequestException as exc:
            raise SourceError("HEAD failed: %s" % short_error(exc)) from None
        if r.status_code == 404:
            raise Vanished("gone from the old server")
        if r.status_code != 200:
            raise SourceError("HEAD answered %d %s" % (r.status_code, r.headers.get("X-Exception", "")))
        return _version_header(r)

    def open(self, entry):
        """GET the file: an :class:`OpenFile` of its plain bytes (gzip is decoded here)."""
        try:
            r = self._session().get(self._file_url(entry.name), timeout=self.timeout, stream=True,
                                    headers={"Accept-Encoding": "gzip"})
        except requests.RequestException as exc:
            raise SourceError("GET failed: %s" % short_error(exc)) from None
        if r.status_code != 200:
            r.close()
            if r.status_code == 404:
                raise Vanished("gone from the old server")
            raise SourceError("GET answered %d %s" % (r.status_code, r.headers.get("X-Exception", "")))
        try:
            version = _version_header(r)
        except SourceError:
            r.close()
            raise
        gz = r.headers.get("Content-Encoding", "").lower() == "gzip"
        size = r.headers.get("Logical-Size") if gz else r.headers.get("Content-Length")
        size = int(size) if size and size.isdigit() else None

        def raw_chunks():
            try:
                while True:
                    data = r.raw.read(CHUNK, decode_content=False)
                    if not data:
                        return
                    yield data
            except Exception as exc:  # noqa: BLE001 - any transport failure of this one file
                raise SourceError("reading the body failed: %s" % short_error(exc)) from None

        chunks = _gunzip(raw_chunks()) if gz else raw_chunks()
        return OpenFile(version, size, chunks, close=r.close)


def _version_header(response):
    try:
        return parse_version(response.headers.get("Last-Modified", ""))
    except InvalidVersionError:
        raise SourceError("no valid Last-Modified in the answer") from None


class DirSource:
    """A stopped 2.x server's data folder ``root`` (the folder holding ``links/``, ``blobs/``)."""

    kind = "dir"

    def __init__(self, root, prefix=""):
        self.root = os.path.abspath(root)
        self.links = os.path.join(self.root, "links")
        self.prefix = normalize_prefix(prefix)
        if not os.path.isdir(self.root):
            raise SourceError("%s: %s" % (self.root, "no such folder" if not os.path.lexists(self.root)
                                          else "not a folder"))
        if not os.path.isdir(self.links):
            raise SourceError("%s is not a filetracker 2.x data folder (no links/ inside)" % self.root)

    def describe(self):
        return self.root + (" (prefix %s)" % self.prefix if self.prefix else "")

    def entries(self):
        """Every link under the prefix: name, version (link mtime) and SHA-256 (blob name)."""
        # the folder as the 2.x server named it on disk (see name_from_2x)
        stored_prefix = self.prefix.encode("utf-8", "surrogateescape").decode("latin-1")
        top = os.path.join(self.links, stored_prefix.lstrip("/")) if self.prefix else self.links
        out = []
        for folder, dirs, files in os.walk(top):
            dirs.sort()
            for fname in files:
                path = os.path.join(folder, fname)
                entry = self._entry(path)
                if entry is not None:
                    out.append(entry)
        out.sort(key=lambda e: e.name)
        return out

    def _entry(self, path):
        name = name_from_2x("/" + os.path.relpath(path, self.links).replace(os.sep, "/"))
        try:
            st = os.lstat(path)
            target = os.readlink(path)
        except OSError:
            # not a symlink (or gone): not something the 2.x server wrote; report it as an entry
            # without a blob so the copy lists it as failed rather than skipping it silently
            return Entry(name=name, version=None, sha256=None, blob=None)
        blob = os.path.normpath(os.path.join(os.path.dirname(path), target))
        return Entry(name=name, version=int(st.st_mtime), sha256=os.path.basename(blob), blob=blob)

    def version(self, entry):
        if entry.version is None:
            raise SourceError("not a 2.x link (not a symlink)")
        return entry.version

    def open(self, entry):
        if entry.blob is None:
            raise SourceError("not a 2.x link (not a symlink)")
        try:
            f = open(entry.blob, "rb")
        except FileNotFoundError:
            raise SourceError("blob missing: %s" % entry.blob) from None
        except OSError as exc:
            raise SourceError("cannot open blob: %s" % exc) from None

        def raw_chunks():
            while True:
                data = f.read(CHUNK)
                if not data:
                    return
                yield data

        return OpenFile(entry.version, None, _gunzip(raw_chunks()), expected_sha256=entry.sha256,
                        close=f.close)


def open_source(url=None, directory=None, prefix=""):
    """The source named by ``--from URL`` or ``--from-dir DIR``."""
    if (url is None) == (directory is None):
        raise ValueError("give exactly one of a URL and a folder")
    return HttpSource(url, prefix) if url is not None else DirSource(directory, prefix)

