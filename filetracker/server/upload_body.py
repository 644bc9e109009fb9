"""Receiving a streamed PUT body into an ObjectStore upload: one mixin for every handler.

The public ``/files`` handler and the cluster node's ``/_cluster/files`` handler
receive bodies the same way: optional gzip decoding, plain pieces gathered up to
:data:`WRITE_BATCH` bytes and written to the store's
:class:`~filetracker.storage.Upload` in the executor, one batch while the next
is received (a third waits for the first: the disk's pace holds Tornado's
reading back), the first failure remembered for ``put()`` to answer, and the
temp file dropped when the client goes away.

Why: Tornado hands the body over in pieces of at most 256 KiB
(:data:`filetracker.server.app.BODY_CHUNK`; 64 KiB then).  Writing each in
its own executor hop, awaited, made a 256 MiB PUT 4,096 round trips between the
event loop and a disk thread, during which only one of them worked: our server
took 200-220 MB/s with both threads mostly idle.  Memory: a request holds at
most two batches, and all requests together at most :data:`UPLOAD_MEMORY`
(beyond it each piece is written as it comes), so many slow clients trickling
bodies cost no more memory than before.
"""

import asyncio
import logging
import re

from filetracker.server.base import HTTPFail
from filetracker.server.futures import mark_retrieved
from filetracker.server.streaming import GzipDecoder
from filetracker.storage.errors import StorageError, StoreFull

log = logging.getLogger("filetracker.server")

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def sha256_header(text):
    """The value of a ``SHA256-Checksum`` header, lowercased; ``ValueError`` when it is not
    64 hex digits."""
    text = text.strip()
    if not _SHA256_RE.fullmatch(text):
        raise ValueError("malformed SHA256-Checksum header (64 hex digits expected)")
    return text.lower()


def logical_size_header(text):
    """The value of a ``Logical-Size`` header as an int; ``ValueError`` when it is not at most
    19 ASCII digits (int() refuses very long digit strings, and no store holds more)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ValueError("malformed Logical-Size header")
    return int(text)


def check_body_headers(headers):
    """``(gzip, sha256 or None, logical size or None)`` of a PUT's headers, judged as every
    server judges them: 415 for an encoding other than gzip or identity, 400 for a malformed
    ``SHA256-Checksum`` or ``Logical-Size`` (before any body byte is asked for)."""
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity"):
        raise HTTPFail(415, "unsupported Content-Encoding: %s" % encoding)
    sha, size = headers.get("SHA256-Checksum"), headers.get("Logical-Size")
    try:
        sha = None if sha is None else sha256_header(sha)
        size = None if size is None else logical_size_header(size)
    except ValueError as e:
        raise HTTPFail(400, str(e))
    return encoding == "gzip", sha, size

#: plain body bytes gathered in memory before one write to the upload (per request)
WRITE_BATCH = 1 << 20
#: body bytes the uploads of one application may hold gathered or being written; above it
#: every piece is written as it comes, as without batches (so slow clients, however many,
#: hold no more memory than a piece each)
UPLOAD_MEMORY = 32 << 20


class UploadMemory:
    """Body bytes held in memory by the uploads of one application (``FilesContext.upload_memory``)."""

    def __init__(self, limit=UPLOAD_MEMORY):
        self.limit = limit
        self.held = 0

    def full(self):
        return self.held >= self.limit

    def release(self, n):
        self.held -= n


class StreamedUploadMixin:
    """Put before the handler base class; the handler must have ``self.ctx.run``.

    In ``prepare()`` call :meth:`parse_body_headers`, then
    :meth:`begin_streamed_upload`; in ``put()`` take the upload with
    :meth:`take_streamed_upload` and commit it.
    """

    takes_upload_slot = True   # a PUT counts towards the guard's --max-uploads
    _upload = None
    _decoder = None
    _decoded = 0             # bytes a gzip body decoded to so far
    _decoded_limit = None    # see decoded_body_limit
    _logical_size = None     # a gzip body's Logical-Size: it may not decode to more
    _error = None
    _busy = False
    _disconnected = False
    _gathered = ()       # plain pieces not yet written (a list once an upload begins)
    _gathered_bytes = 0
    _writing = None      # the write in flight (a task), if any
    _dropping = None     # the task dropping the upload, once started
    _taken = False       # put() has begun taking the upload: a disconnection no longer drops it

    def parse_body_headers(self):
        """Check the body headers (:func:`check_body_headers`) and set up gzip decoding;
        return ``(SHA256-Checksum normalised, Logical-Size as an int)``, each None when absent."""
        gzipped, sha, size = check_body_headers(self.request.headers)
        if gzipped:
            self._decoder = GzipDecoder()
            self._logical_size = size
            self._decoded_limit = self.decoded_body_limit()
        return sha, size

    def decoded_body_limit(self):
        """The most bytes a gzip body may decode to (413 above), or None: ``--max-body-size``.

        The guard counts the bytes on the wire; a gzip body of 300 KB decodes to 300 MB of
        zeros, so the limit is applied to the decoded bytes too."""
        guarded = getattr(self, "_guarded", None)
        return guarded.guard.limits.max_body_size if guarded is not None else None

    def _decoded_too_long(self):
        """The answer when the decoded body passed a limit (checked piece by piece), or None."""
        if self._decoded_limit is not None and self._decoded > self._decoded_limit:
            return HTTPFail(413, "request body too large once decompressed (more than %d bytes)"
                            % self._decoded_limit)
        if self._logical_size is not None and self._decoded > self._logical_size:
            # the store's SizeMismatch words (the size decoded so far: the whole size for a body
            # decoded in one step, as every one a gateway batches is)
            return HTTPFail(400, "content size %d does not match the announced %d"
                            % (self._decoded, self._logical_size))
        return None

    async def begin_streamed_upload(self, store):
        self._gathered = []
        self._upload = await self.ctx.run(store.begin_upload)
        if self._disconnected:
            await self._abort()

    async def data_received(self, chunk):
        if self._upload is None or self._error is not None or self._disconnected:
            return  # not an upload, or already failed: drain and ignore
        self._busy = True
        too_long = None
        try:
            pieces = self._decoder.feed(chunk) if self._decoder else (chunk,)
            memory = self.ctx.upload_memory
            for piece in pieces:
                if self._decoder is not None:
                    self._decoded += len(piece)
                    too_long = self._decoded_too_long()
                    if too_long is not None:
                        self._error = too_long
                        break
                self._gathered.append(piece)
                self._gathered_bytes += len(piece)
                memory.held += len(piece)
                # inside the loop: a gzip bomb stays bounded
                if self._gathered_bytes >= WRITE_BATCH or memory.full():
                    await self._write_gathered(wait=False)
                    if self._disconnected:
                        break
        except _WRITE_ERRORS as e:
            self._error = _write_error(e)
        finally:
            self._busy = False
        if self._error is not None or self._disconnected:
            await self._abort()
            if too_long is not None and self._guarded is not None and not self._finished:
                # answered now, not after the rest of the body (which may decode to gigabytes)
                self._guarded.refuse(too_long.status_code, too_long.message)

    async def _write_gathered(self, wait):
        """Write the gathered pieces once the write in flight is done (raising its error).

        With ``wait`` return when they are written; else leave their write in
        flight and return at once, so Tornado receives the next megabyte while
        the disk thread writes and hashes this one.  At most one write is in
        flight (an Upload takes one writer at a time), so a request holds at
        most two batches.
        """
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing
        if self._disconnected and not self._taken:
            self._discard_gathered()
            return
        pieces, held = self._gathered, self._gathered_bytes
        self._gathered, self._gathered_bytes = [], 0
        if not pieces:
            return
        job = asyncio.ensure_future(self.ctx.run(_write_pieces, self._upload, pieces))
        job.add_done_callback(lambda _: self.ctx.upload_memory.release(held))
        if wait:
            await job
        else:
            job.add_done_callback(mark_retrieved)  # awaited later, unless the request ends first
            self._writing = job

    async def take_streamed_upload(self):
        """At the end of the body: write what is gathered and return the upload (now the
        caller's to commit); raises the :class:`HTTPFail` of the first failure instead.

        Ownership: until this is called a disconnection drops the upload (after the
        write in flight); from the call on, ``put()`` owns it and a disconnection does
        not touch it, so the upload is never used by two threads at once.  A client
        gone after its whole body arrived still has it stored (it saw no answer and
        may retry: a PUT of the same version is idempotent).
        """
        if self._dropping is None and self._error is None and self._upload is not None:
            self._taken = True
            self._busy = True
            try:
                if self._decoder is not None:
                    self._decoder.close()
                await self._write_gathered(wait=True)
            except _WRITE_ERRORS as e:
                self._error = _write_error(e)
            finally:
                self._busy = False
        if self._error is None and self._dropping is not None:
            self._error = HTTPFail(400, "the upload was dropped: the client went away")
        if self._error is not None:
            await self._abort()
            raise self._error
        upload, self._upload = self._upload, None
        return upload

    async def _abort(self):
        """Drop the upload (after its write in flight); concurrent calls share one drop."""
        if self._dropping is None:
            self._dropping = asyncio.ensure_future(self._drop())
            self._dropping.add_done_callback(mark_retrieved)
        await self._dropping

    def _discard_gathered(self):
        """Forget the gathered pieces (the upload is dropped, or the request is over)."""
        self.ctx.upload_memory.release(self._gathered_bytes)
        self._gathered, self._gathered_bytes = [], 0

    def on_finish(self):
        self._discard_gathered()  # none left after a commit; some after an early answer
        super().on_finish()

    async def _drop(self):
        self._discard_gathered()
        writing, self._writing = self._writing, None
        if writing is not None:
            try:
                await writing
            except Exception:  # noqa: BLE001 - the upload is dropped anyway
                pass
        upload, self._upload = self._upload, None
        if upload is not None:
            await self.ctx.run(upload.abort)

    def on_connection_close(self):
        # The client went away mid-upload: drop the temp file.  Not while a coroutine of ours
        # is using the upload (it drops it itself when it resumes and sees the disconnection),
        # nor once put() has taken it.
        self._disconnected = True
        if self._upload is not None and not self._busy and not self._taken:
            asyncio.ensure_future(self._abort()).add_done_callback(_log_failed_drop)  # nobody awaits it
        super().on_connection_close()


#: failures of receiving a body, answered by :func:`_write_error`
_WRITE_ERRORS = (ValueError, StorageError, OSError)


def _write_pieces(upload, pieces):
    """Blocking: ``upload.write`` each piece in order (through the upload's own ``write``, so a
    wrapper such as the node's reserve guard sees every byte)."""
    for data in pieces:
        upload.write(data)


def _log_failed_drop(task):
    """Done callback of a drop nobody awaits: its failure (the temp file stays) is logged."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("dropping an abandoned upload failed: %s", task.exception())


def _write_error(e):
    """The answer to a failure while receiving a body: a corrupt gzip stream, a full disk, I/O."""
    if isinstance(e, ValueError):
        return HTTPFail(400, str(e))
    if isinstance(e, StoreFull):
        return HTTPFail(507, str(e))
    return HTTPFail(500, "write failed: %s" % e)
