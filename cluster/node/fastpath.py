"""``GET`` and ``PUT /_cluster/files/<name>`` of a small file in one executor hop.

The general handler (:class:`cluster.node.internal.FileHandler`) looks the
record up, opens the blob, verifies it and reads it chunk by chunk: four or
more trips to the executor per request, which is what a gateway GET costs on
every replica it reads a small file from.  :class:`FastFileHandler` does the
same steps in one blocking call (:func:`read_small`) when the answer's body is
at most :data:`SMALL` bytes, and hands anything else (larger bodies, HEAD,
PUT, DELETE) to the general handler, so the answers are the same:

* 200 (or 206 for a ``Range``) + record header set + the bytes;
* 404 + record header set for a tombstone, 404 without it when there is no record;
* 503 ``checksum mismatch ...`` for a blob that fails verification (bitrot,
  see :mod:`cluster.node.integrity`), before any byte is sent, so the gateway
  moves on to the next replica.

A PUT whose ``Content-Length`` is at most :data:`SMALL_PUT` (and not gzip) is
received into memory and stored by :func:`store_small` in one hop (temp file,
write, fsync, rename, record commit: :meth:`ObjectStore.commit_upload`, same
durability), instead of one hop to open the upload, one per body chunk and one
to commit.  Every check of the general ``prepare`` (secret, version, checksum
header, reserved space) runs first; the answers are the same.

One deviation, allowed by HTTP: a ``Range`` on an *empty* file (which no range
can satisfy) is answered 200 with the empty body, not 416.
"""

import tornado.web

from cluster.node.integrity import BlobCorrupt
from cluster.node.internal import FileHandler
from cluster.peers import record_headers
from filetracker.ranges import RangeNotSatisfiable, content_range, parse_range
from filetracker.server import HTTPFail, name_from_path
from filetracker.storage import ChecksumMismatch, SizeMismatch

#: largest body served in one hop (a gateway's first piece of a small file)
SMALL = 1 << 20
#: largest PUT body received in memory and stored in one hop
SMALL_PUT = 256 * 1024


def store_small(store, body, name, version, expected_sha256, expected_size):
    """Blocking: store ``body`` as ``name`` at ``version``; ``(winner, applied)`` like commit_upload."""
    upload = store.begin_upload()
    try:
        upload.write(body)
    except BaseException:
        upload.abort()
        raise
    return store.commit_upload(upload, name, version, expected_sha256=expected_sha256,
                               expected_size=expected_size)


def read_small(store, integrity, name, range_header):
    """Blocking.  ``("ok", record, status, start, end_exclusive, data)``, ``("missing", record_or_None)``,
    ``("corrupt", message)``, or None when the general handler must answer (large body, bad range)."""
    found = store.open_record(name)
    if found is None:
        record = store.get_record(name)
        if record is not None and not record.deleted:
            return None  # a live record whose blob could not be opened: the general path reports it
        return ("missing", record)
    record, f = found
    try:
        if integrity is not None:
            try:
                integrity.check(record.sha256, f, name=name)
            except BlobCorrupt as e:
                return ("corrupt", str(e))
        status, start, end = 200, 0, record.size
        if range_header is not None and record.size > 0:
            try:
                rng = parse_range(range_header, record.size)
            except RangeNotSatisfiable:
                return None
            if rng is not None:
                status, start, end = 206, rng[0], rng[1] + 1
        if end - start > SMALL:
            return None
        if start:
            f.seek(start)
        data = f.read(end - start)
        if len(data) != end - start:
            return None  # shorter than its record: let the general path report it
        return ("ok", record, status, start, end, data)
    finally:
        f.close()


@tornado.web.stream_request_body
class FastFileHandler(FileHandler):
    """:class:`cluster.node.internal.FileHandler` with one-hop GET and PUT for small bodies."""

    _small = None  # body pieces of a small PUT (at most SMALL_PUT bytes: Tornado enforces Content-Length)

    async def begin_streamed_upload(self, store):
        # called at the end of the general prepare(), after every check
        length = self.request.headers.get("Content-Length", "")
        if self._decoder is None and length.isdigit() and int(length) <= SMALL_PUT:
            self._small = []
            return
        await super().begin_streamed_upload(store)

    async def data_received(self, chunk):
        if self._small is not None:
            self._small.append(chunk)
            return
        await super().data_received(chunk)

    async def put(self, path_arg):
        if self._small is None:
            return await super().put(path_arg)
        body, self._small = b"".join(self._small), None
        try:
            winner, applied = await self.ctx.run(store_small, self.store, body, self.name, self.version,
                                                 self.expected_sha256, getattr(self, "expected_size", None))
        except (ChecksumMismatch, SizeMismatch) as e:
            raise HTTPFail(400, str(e))
        if self.hint_for and applied:
            self.node.hints_taken += 1
        self.send_record_headers(winner)
        self.set_header("X-Applied", "1" if applied else "0")
        self.finish()

    async def get(self, path_arg):
        if self.request.method != "GET":
            return await super().get(path_arg)
        name, _ = name_from_path(path_arg, allow_version=False)
        integrity = getattr(self.node, "integrity", None)
        if not getattr(self.node.config, "verify_reads", True):
            integrity = None
        out = await self.ctx.run(read_small, self.store, integrity, name, self.request.headers.get("Range"))
        if out is None:
            return await super().get(path_arg)
        if out[0] == "missing":
            record = out[1]
            if record is None:
                raise HTTPFail(404, "no record of %s" % name)
            raise HTTPFail(404, "%s is deleted" % name, headers=record_headers(record))
        if out[0] == "corrupt":
            raise HTTPFail(503, out[1])
        _, record, status, start, end, data = out
        self.set_status(status)
        if status == 206:
            self.set_header("Content-Range", content_range(start, end - 1, record.size))
        self.send_record_headers(record)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.finish(data)

    head = get


def fastpath_routes(node, ctx):
    """URL specs placed before the internal routes (the first matching route wins)."""
    return [tornado.web.url(r"/_cluster/files/(.*)", FastFileHandler, {"node": node, "ctx": ctx})]
