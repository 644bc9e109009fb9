"""``GET`` and ``PUT /_cluster/files/<name>`` of a small file in one executor hop,
and ``POST /_cluster/lookup`` / ``POST /_cluster/read`` (the records, or records and bodies
of small files, of many names in one request: a gateway batches concurrent reads).

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
from cluster.node.internal import FileHandler, InternalHandler
from cluster.peers import record_headers
from filetracker.errors import InvalidNameError
from filetracker.names import check_name
from filetracker.ranges import RangeNotSatisfiable, content_range, parse_range
from filetracker.server import HTTPFail, name_from_path
from filetracker.storage import ChecksumMismatch, SizeMismatch

#: largest body served in one hop (a gateway's first piece of a small file)
SMALL = 1 << 20
#: most names in one POST /_cluster/lookup
MAX_LOOKUP = 1000
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
    kw = {"node": node, "ctx": ctx}
    return [tornado.web.url(r"/_cluster/files/(.*)", FastFileHandler, kw),
            tornado.web.url(r"/_cluster/lookup", LookupHandler, kw),
            tornado.web.url(r"/_cluster/read", ReadManyHandler, kw)]


def _names_body(handler, limit):
    """The request body of a batch endpoint: a msgpack list of at most ``limit`` valid,
    unversioned file names (400 with a message otherwise)."""
    names = handler.msgpack_body()
    if not isinstance(names, list) or len(names) > limit or not all(isinstance(n, str) for n in names):
        raise HTTPFail(400, "expected a msgpack list of at most %d names" % limit)
    for n in names:
        try:
            check_name(n, allow_version=False)
        except InvalidNameError as e:
            raise HTTPFail(400, "invalid file name: %s" % e)
    return names


class LookupHandler(InternalHandler):
    """``POST /_cluster/lookup``: the records of several names in one request (one executor hop).

    Body: msgpack list of names.  Answer: msgpack list, one entry per name:
    ``[version, sha256, size, deleted]`` or None when there is no record
    (tombstones included, like ``HEAD /_cluster/files/<name>``).  A gateway
    under load batches the record lookups of concurrent reads into one of these.
    """

    async def post(self):
        names = _names_body(self, MAX_LOOKUP)

        def lookup():
            out = []
            for n in names:
                r = self.store.get_record(n)
                out.append(None if r is None else [r.version, r.sha256, r.size, r.deleted])
            return out

        self.finish_msgpack(await self.ctx.run(lookup))


#: largest body returned by POST /_cluster/read (bigger files: record only)
READ_MANY_BODY = 64 * 1024
#: most names in one POST /_cluster/read
MAX_READ = 64


def read_many(store, integrity, names, limit=READ_MANY_BODY):
    """Blocking: for each name ``["ok", v, sha, size, data]``, ``["big", v, sha, size]`` (larger than
    ``limit``, or the blob does not match its record's size), ``["missing", [v, sha, size, deleted]]``
    / ``["missing", None]``, or ``["corrupt", message]``."""
    out = []
    for name in names:
        found = store.open_record(name)
        if found is None:
            r = store.get_record(name)
            if r is not None and not r.deleted:
                out.append(["big", r.version, r.sha256, r.size])  # blob unopenable: the general path reports it
            else:
                out.append(["missing", None if r is None else [r.version, r.sha256, r.size, r.deleted]])
            continue
        record, f = found
        try:
            if record.size > limit:
                out.append(["big", record.version, record.sha256, record.size])
                continue
            if integrity is not None:
                try:
                    integrity.check(record.sha256, f, name=name)
                except BlobCorrupt as e:
                    out.append(["corrupt", str(e)])
                    continue
            data = f.read(record.size)
            if len(data) != record.size:
                out.append(["big", record.version, record.sha256, record.size])
            else:
                out.append(["ok", record.version, record.sha256, record.size, data])
        finally:
            f.close()
    return out


class ReadManyHandler(InternalHandler):
    """``POST /_cluster/read``: records and bodies of several small files in one request.

    Body: msgpack list of names (at most :data:`MAX_READ`).  Answer: msgpack
    list of :func:`read_many` entries.  A gateway under load batches the reads
    of concurrent small GETs into one of these.
    """

    async def post(self):
        names = _names_body(self, MAX_READ)
        integrity = getattr(self.node, "integrity", None)
        if not getattr(self.node.config, "verify_reads", True):
            integrity = None
        self.finish_msgpack(await self.ctx.run(read_many, self.store, integrity, names))
