"""``GET`` and ``PUT /_cluster/files/<name>`` of a small file in one executor hop,
and ``POST /_cluster/lookup`` / ``POST /_cluster/read`` / ``POST /_cluster/fetch`` (the records,
or records and bodies of small files, of many names in one request: a gateway batches
concurrent reads).

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

import asyncio
import hashlib

import tornado.web

from cluster.node.integrity import BlobCorrupt
from cluster.node.internal import FileHandler, InternalHandler
from cluster.peers import INLINE_BATCH_COUNT, INLINE_BLOB_MAX, UPLOAD_SHA256_HEADER, record_headers
from filetracker.errors import InvalidNameError
from filetracker.names import check_name
from filetracker.ranges import RangeNotSatisfiable, content_range, parse_range
from filetracker.records import Record
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


def _select(record, range_header):
    """``(status, start, end_exclusive)`` of a small answer for ``range_header``, or None when
    the general handler must answer (a range it cannot satisfy, a body above :data:`SMALL`)."""
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
    return status, start, end


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
        selected = _select(record, range_header)
        if selected is None:
            return None
        status, start, end = selected
        if start:
            f.seek(start)
        data = f.read(end - start)
        if len(data) != end - start:
            return None  # shorter than its record: let the general path reports it
        return ("ok", record, status, start, end, data)
    finally:
        f.close()


def _from_cache(entry, range_header):
    """What :func:`read_small` would answer, from a read-cache entry holding the whole body."""
    record, data = entry
    if record.deleted:
        return ("missing", record)
    selected = _select(record, range_header)
    if selected is None:
        return None
    status, start, end = selected
    return ("ok", record, status, start, end, data[start:end])


def _fill_from(node, name, out, generation):
    """Remember what :func:`read_small` found: a whole verified body (else its record), or a tombstone."""
    if out is None:
        return
    if out[0] == "ok" and out[2] == 200:
        node.read_cache.fill(name, out[1], out[5] if _verified(node, out[1]) else None, generation)
    elif out[0] == "missing" and out[1] is not None:
        node.read_cache.fill(name, out[1], None, generation)


def _integrity(node):
    """The node's bitrot check for reads, or None when ``--no-verify-reads``."""
    if not getattr(node.config, "verify_reads", True):
        return None
    return getattr(node, "integrity", None)


def _verified(node, record):
    """Whether a read of ``record``'s blob was checked before its bytes were returned (so the
    bytes may be cached); blobs above ``--verify-reads-max-bytes`` are checked in the background."""
    integrity = _integrity(node)
    if integrity is None:
        return False
    limit = integrity.read_verify_max
    return not limit or record.size <= limit


async def read_small_cached(node, ctx, name, range_header):
    """:func:`read_small` answered from the node's read cache when it can, else read (one
    executor hop) and remembered."""
    cache = node.read_cache
    entry = cache.get(name, want_body=True)
    if entry is not None:
        return _from_cache(entry, range_header)
    generation = cache.generation(name)
    out = await ctx.run(read_small, node.store, _integrity(node), name, range_header)
    _fill_from(node, name, out, generation)
    return out


async def record_cached(node, ctx, name):
    """The record of ``name`` (a tombstone included) or None, from the read cache when it can."""
    cache = node.read_cache
    entry = cache.get(name)
    if entry is not None:
        return entry[0]
    generation = cache.generation(name)
    record = await ctx.run(node.store.get_record, name)
    cache.fill(name, record, None, generation)
    return record


async def public_get_cached(handler, node, name):
    """The node's public ``GET /files/<name>`` (no Range) of a small live file, answered like
    :class:`filetracker.server.FileHandler` does; False when that handler must answer."""
    if not node.read_cache.enabled:
        return False
    out = await read_small_cached(node, handler.ctx, name, None)
    if out is not None and out[0] == "corrupt":
        raise HTTPFail(503, out[1])  # the check quarantined the blob: answer now, like check_blob would
    if out is None or out[0] != "ok":
        return False
    handler.send_whole(out[1], out[5])
    return True


def public_head_cached(handler, node, name):
    """The node's public ``HEAD /files/<name>`` answered from the read cache; False on a miss.

    Only an entry holding the body counts: it was filled by a read that opened and
    verified the blob, as the general HEAD opens it (an entry with the record alone
    may name a blob that is gone, e.g. quarantined, which that HEAD answers 404).
    """
    if not node.read_cache.enabled:
        return False
    entry = node.read_cache.get(name, want_body=True)
    if entry is None or entry[0].deleted:
        return False
    handler.send_whole(entry[0], b"")
    return True


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
        # the content received (a checksum sent was checked against it): see FileHandler.put
        self.set_header(UPLOAD_SHA256_HEADER, self.expected_sha256 or hashlib.sha256(body).hexdigest())
        self.finish()

    async def get(self, path_arg):
        name, _ = name_from_path(path_arg, allow_version=False)
        if self.request.method != "GET":
            # HEAD describes the record (200 for a tombstone too), like the general handler
            self.finish_record_head(name, await record_cached(self.node, self.ctx, name))
            return
        out = await read_small_cached(self.node, self.ctx, name, self.request.headers.get("Range"))
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
            tornado.web.url(r"/_cluster/read", ReadManyHandler, kw),
            tornado.web.url(r"/_cluster/fetch", FetchHandler, kw)]


def _check_names(names, limit):
    """``names`` if it is a list of at most ``limit`` valid, unversioned file names, else 400."""
    if not isinstance(names, list) or len(names) > limit or not all(isinstance(n, str) for n in names):
        raise HTTPFail(400, "expected a msgpack list of at most %d names" % limit)
    for n in names:
        try:
            check_name(n, allow_version=False)
        except InvalidNameError as e:
            raise HTTPFail(400, "invalid file name: %s" % e)
    return names


def _names_body(handler, limit):
    """The request body of a batch endpoint: a msgpack list of at most ``limit`` valid,
    unversioned file names (400 with a message otherwise)."""
    return _check_names(handler.msgpack_body(), limit)


class LookupHandler(InternalHandler):
    """``POST /_cluster/lookup``: the records of several names in one request (one executor hop).

    Body: msgpack list of names.  Answer: msgpack list, one entry per name:
    ``[version, sha256, size, deleted]`` or None when there is no record
    (tombstones included, like ``HEAD /_cluster/files/<name>``).  A gateway
    under load batches the record lookups of concurrent reads into one of these.
    """

    async def post(self):
        self.finish_msgpack(await lookup_rows(self.node, self.ctx, _names_body(self, MAX_LOOKUP)))


async def _through_cache(node, ctx, names, hit, read_rest, remember):
    """Answer rows for ``names``: ``hit(entry)`` for a read-cache entry (None: it cannot answer),
    the rest from ``read_rest(names)`` in one executor hop, each remembered with
    ``remember(name, row, generation)`` (the generation taken before the read: a fill that
    raced a write is dropped, see :mod:`filetracker.storage.readcache`)."""
    cache = node.read_cache
    out, todo = [None] * len(names), []
    for i, n in enumerate(names):
        entry = cache.get(n)
        out[i] = None if entry is None else hit(entry)
        if out[i] is None:
            todo.append((i, n, cache.generation(n)))
    if todo:
        found = await ctx.run(read_rest, [n for _, n, _ in todo])
        for (i, n, generation), row in zip(todo, found, strict=True):
            out[i] = row
            remember(n, row, generation)
    return out


async def lookup_rows(node, ctx, names):
    """The answer rows of ``POST /_cluster/lookup`` for ``names`` (read cache first, then one hop)."""
    cache = node.read_cache
    records = await _through_cache(
        node, ctx, names, hit=lambda entry: entry[0],
        read_rest=lambda rest: [node.store.get_record(n) for n in rest],
        remember=lambda n, record, generation: cache.fill(n, record, None, generation))
    return [None if r is None else [r.version, r.sha256, r.size, r.deleted] for r in records]


#: largest body returned by POST /_cluster/read (bigger files: record only)
READ_MANY_BODY = INLINE_BLOB_MAX
#: most names in one POST /_cluster/read
MAX_READ = INLINE_BATCH_COUNT


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
    of concurrent small GETs into one of these.  With ``?cache=0`` what is read
    from the disk is not kept in the read cache (a peer copying files during
    anti-entropy or a rebalance reads each once: it must not evict what clients read).
    """

    async def post(self):
        fill = self.get_query_argument("cache", "1") != "0"
        self.finish_msgpack(await read_rows(self.node, self.ctx, _names_body(self, MAX_READ), fill=fill))


async def read_rows(node, ctx, names, fill=True):
    """The answer rows of ``POST /_cluster/read`` for ``names`` (read cache first, then one hop;
    what the hop read is kept in the cache when ``fill``)."""
    cache = node.read_cache
    if not fill:  # neither filled nor consulted: no hit counted, no entry moved up the LRU
        return await ctx.run(read_many, node.store, _integrity(node), names)

    def remember(n, item, generation):
        if item[0] == "ok":
            record = Record(n, item[1], item[2], item[3])
            cache.fill(n, record, item[4] if _verified(node, record) else None, generation)
        elif item[0] == "missing" and item[1] is not None:
            cache.fill(n, Record(n, *item[1]), None, generation)

    return await _through_cache(node, ctx, names, hit=_many_entry,
                                read_rest=lambda rest: read_many(node.store, _integrity(node), rest),
                                remember=remember)


class FetchHandler(InternalHandler):
    """``POST /_cluster/fetch``: a ``/_cluster/lookup`` and a ``/_cluster/read`` in one request.

    Body: msgpack map ``{"lookup": [names], "read": [names]}`` (either list may
    be empty or left out; at most :data:`MAX_LOOKUP` and :data:`MAX_READ`).
    Answer: ``{"lookup": [rows], "read": [rows]}``, the rows of those two
    endpoints.  A gateway read asks one owner for the body and the others for
    their record: with both kinds in one request per node, a node answers about
    half as many requests under load.
    """

    async def post(self):
        self.finish_msgpack(await fetch_rows(self.node, self.ctx, *fetch_names(self.msgpack_body())))


def fetch_names(body):
    """``(lookups, reads)``: the names of a decoded ``POST /_cluster/fetch`` body (400 otherwise)."""
    if not isinstance(body, dict) or not set(body) <= {"lookup", "read"}:
        raise HTTPFail(400, 'expected a msgpack map {"lookup": [names], "read": [names]}')
    return _check_names(body.get("lookup", []), MAX_LOOKUP), _check_names(body.get("read", []), MAX_READ)


async def fetch_rows(node, ctx, lookups, reads):
    """The answer of ``POST /_cluster/fetch``: ``{"lookup": rows, "read": rows}``."""
    # both at once: when both miss the cache, their executor hops overlap
    looked_up, read = await asyncio.gather(lookup_rows(node, ctx, lookups), read_rows(node, ctx, reads))
    return {"lookup": looked_up, "read": read}


def _many_entry(entry, limit=READ_MANY_BODY):
    """The :func:`read_many` item of a read-cache entry, or None when the store must be read."""
    r, data = entry
    if r.deleted:
        return ["missing", [r.version, r.sha256, r.size, r.deleted]]
    if r.size > limit:
        return ["big", r.version, r.sha256, r.size]
    if data is None:
        return None
    return ["ok", r.version, r.sha256, r.size, data]
