"""Receiving a streamed PUT body into an ObjectStore upload: one mixin for every handler.

The public ``/files`` handler and the cluster node's ``/_cluster/files`` handler
receive bodies the same way: optional gzip decoding, each plain piece written to
the store's :class:`~filetracker.storage.Upload` in the executor (awaited, so
Tornado stops reading while the disk is busy), the first failure remembered for
``put()`` to answer, and the temp file dropped when the client goes away.
"""

import asyncio
import re

from filetracker.server.base import HTTPFail
from filetracker.server.streaming import GzipDecoder
from filetracker.storage.errors import StoreFull

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class StreamedUploadMixin:
    """Put before the handler base class; the handler must have ``self.ctx.run``.

    In ``prepare()`` call :meth:`parse_body_headers`, then
    :meth:`begin_streamed_upload`; in ``put()`` check ``self._error`` and take
    ``self._upload`` (set it to None once committed or aborted).
    """

    _upload = None
    _decoder = None
    _error = None
    _busy = False
    _disconnected = False

    def parse_body_headers(self):
        """Set up gzip decoding; return the normalised ``SHA256-Checksum`` or None (400 if malformed)."""
        encoding = self.request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding == "gzip":
            self._decoder = GzipDecoder()
        elif encoding != "identity":
            raise HTTPFail(415, "unsupported Content-Encoding: %s" % encoding)
        sha = self.request.headers.get("SHA256-Checksum")
        if sha is None:
            return None
        sha = sha.strip()
        if not _SHA256_RE.match(sha):
            raise HTTPFail(400, "malformed SHA256-Checksum header (64 hex digits expected)")
        return sha.lower()

    def parse_logical_size(self):
        """The ``Logical-Size`` header (uncompressed size) as an int, or None; 400 if malformed."""
        text = self.request.headers.get("Logical-Size")
        if text is None:
            return None
        text = text.strip()
        if not (text.isascii() and text.isdigit()):
            raise HTTPFail(400, "malformed Logical-Size header")
        return int(text)

    async def begin_streamed_upload(self, store):
        self._upload = await self.ctx.run(store.begin_upload)
        if self._disconnected:
            await self._abort()

    async def data_received(self, chunk):
        if self._upload is None or self._error is not None or self._disconnected:
            return  # not an upload, or already failed: drain and ignore
        try:
            pieces = self._decoder.feed(chunk) if self._decoder else (chunk,)
            for piece in pieces:
                self._busy = True
                try:
                    await self.ctx.run(self._upload.write, piece)
                finally:
                    self._busy = False
                if self._disconnected:
                    break
        except ValueError as e:
            self._error = HTTPFail(400, str(e))
        except StoreFull as e:
            self._error = HTTPFail(507, str(e))
        except OSError as e:
            self._error = HTTPFail(500, "write failed: %s" % e)
        if self._error is not None or self._disconnected:
            await self._abort()

    async def _abort(self):
        upload, self._upload = self._upload, None
        if upload is not None:
            await self.ctx.run(upload.abort)

    def on_connection_close(self):
        # The client went away mid-upload: drop the temp file (once no write is running).
        self._disconnected = True
        if self._upload is not None and not self._busy:
            asyncio.ensure_future(self._abort())
        super().on_connection_close()
