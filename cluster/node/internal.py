"""Handlers of the internal ``/_cluster/`` API (the table in ``docs/ARCHITECTURE.md``).

Every handler checks the cluster secret in :meth:`InternalHandler.prepare`,
before anything is read or written, and answers 403 without it.  Versions are
plain integers here; a record travels as the *record header set*
(``X-Version``, ``X-Sha256``, ``X-Size``, ``X-Deleted``) or as msgpack dicts.
Store calls run in the executor (``ctx.run``), never on the event loop.
"""

import json
import logging
import os
import re

import msgpack
import tornado.web

from cluster.node.batches import store_many
from cluster.node.integrity import BlobCorrupt
from cluster.node.state import RingConflict, check_draining
from cluster.peers import (
    DECODED_LIMIT_HEADER,
    INLINE_BATCH_BYTES,
    INLINE_BLOB_MAX,
    MAX_PARTITIONS_PER_REQUEST,
    UPLOAD_SHA256_HEADER,
    record_headers,
)
from cluster.ring import Ring, RingError
from cluster.secret import SECRET_HEADER, secret_ok
from filetracker.errors import InvalidNameError
from filetracker.httpdate import MAX_VERSION
from filetracker.names import check_name
from filetracker.records import Record, worth_copying
from filetracker.server import BaseHandler, HTTPFail, folder_from_path, name_from_path
from filetracker.server.app import MAX_BUFFERED_BODY
from filetracker.server.streaming import select_range, send_file
from filetracker.server.upload_body import StreamedUploadMixin
from filetracker.storage import BlobMissing, ChecksumMismatch, SizeMismatch, StoreFull

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MSGPACK = "application/msgpack"
#: most records in one POST /_cluster/records (senders offer 500 at a time)
MAX_RECORDS_POSTED = 10_000
#: a POST /_cluster/partitions answer stops after the partition that reaches this many records
MAX_RECORDS_LISTED = 10_000

log = logging.getLogger(__name__)


def int_arg(handler, name, required=True, maximum=2 ** 63 - 1):
    """An integer query argument, 0 .. ``maximum`` (400 when missing and required, malformed
    or out of range)."""
    text = handler.get_query_argument(name, None)
    if text is None:
        if required:
            raise HTTPFail(400, "query parameter %s (an integer) is required" % name)
        return None
    text = text.strip()
    # at most 2**63-1 in any case: the store keeps 64-bit integers (a larger one would be a 500 later)
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > maximum:
        raise HTTPFail(400, "query parameter %s must be an integer 0 .. %d: %r" % (name, maximum, text))
    return int(text)


class InternalHandler(BaseHandler):
    """Base of every ``/_cluster/`` handler: ``node``, ``ctx`` (executor), secret check.

    The secret is checked in :meth:`prepare`, before any body byte is read
    (BaseHandler streams every body): a request without it costs no memory."""

    #: record and blob batches, rings: kept in memory (only once the secret was checked)
    max_buffered_body = MAX_BUFFERED_BODY

    def initialize(self, node, ctx):
        self.node = node
        self.ctx = ctx
        self.max_header_bytes = ctx.max_header_bytes

    def prepare(self):
        super().prepare()
        if not secret_ok(self.node.config.cluster_secret, self.request.headers.get(SECRET_HEADER)):
            raise HTTPFail(403, "the internal cluster API requires the cluster secret (%s)" % SECRET_HEADER)

    @property
    def store(self):
        return self.node.store

    def send_record_headers(self, record):
        for k, v in record_headers(record).items():
            self.set_header(k, v)

    def finish_record_head(self, name, record):
        """The HEAD answer of ``/_cluster/files/<name>``: 200 with the record header set, for a
        tombstone too (it describes the record, not a body); 404 without a record."""
        if record is None:
            raise HTTPFail(404, "no record of %s" % name)
        self.send_record_headers(record)
        self.set_header("Content-Length", str(record.size))
        self.finish()

    def finish_msgpack(self, obj):
        self.set_header("Content-Type", MSGPACK)
        self.finish(msgpack.packb(obj))

    def finish_json(self, obj):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(obj, sort_keys=True))

    async def verify_blob(self, sha256, f, name=None):
        """Hash the open blob before its first byte is sent (``cluster/node/integrity.py``).

        A corrupt blob (quarantined by the check, repair queued) closes ``f`` and
        answers 503 ``checksum mismatch ...``, so a gateway tries the next replica.
        """
        integrity = getattr(self.node, "integrity", None)
        if integrity is None or not getattr(self.node.config, "verify_reads", True):
            return
        try:
            await self.ctx.run(integrity.check_read, sha256, f, name)
        except BlobCorrupt as e:
            f.close()
            raise HTTPFail(503, str(e))
        except BaseException:
            f.close()
            raise

    def msgpack_body(self):
        return unpack_body(self.request_body())


def unpack_body(body):
    """A request body decoded from msgpack (400 with a message when it is not valid msgpack)."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001 - any decoding problem is the client's
        raise HTTPFail(400, "request body is not valid msgpack: %s" % e)


class RingHandler(InternalHandler):
    """``GET``/``PUT /_cluster/ring``."""

    def get(self):
        self.finish_msgpack(self.node.ring.to_dict())

    async def put(self):
        doc = self.msgpack_body()
        epoch = doc.get("epoch") if isinstance(doc, dict) else None
        current = self.node.ring.epoch
        if isinstance(epoch, int) and epoch < current:
            # before the ring is built: building a large one takes seconds
            raise HTTPFail(409, "ring epoch %d is older than the current %d" % (epoch, current))
        try:   # in a thread: the placement of 2**P partitions is long CPU work
            ring = await self.ctx.run(Ring.from_dict, doc)
        except (RingError, ValueError) as e:
            raise HTTPFail(400, "invalid ring: %s" % e)
        try:
            installed = await self.ctx.run(self.node.rings.install, ring)
        except RingConflict as e:
            raise HTTPFail(409, str(e))
        self.finish_json({"installed": installed, "epoch": self.node.ring.epoch})


class DrainingHandler(InternalHandler):
    """``GET``/``PUT /_cluster/draining``: the leaving members (msgpack
    ``{"version", "members": [{"id", "url"}]}``), persisted by the node.
    PUT answers 200 when the version is newer (or equal and identical), 409 when older."""

    def get(self):
        self.finish_msgpack(self.node.draining.doc)

    async def put(self):
        try:
            doc = check_draining(self.msgpack_body())
        except ValueError as e:
            raise HTTPFail(400, "invalid draining list: %s" % e)
        try:
            installed = await self.ctx.run(self.node.draining.install, doc)
        except RingConflict as e:
            raise HTTPFail(409, str(e))
        self.finish_json({"installed": installed, "version": self.node.draining.doc["version"]})


@tornado.web.stream_request_body
class FileHandler(StreamedUploadMixin, InternalHandler):
    """``/_cluster/files/<name>``: PUT (one replica, streamed), DELETE, HEAD, GET."""

    async def prepare(self):
        super().prepare()
        if self.request.method != "PUT":
            return
        self.name, _ = name_from_path(self.path_args[0], allow_version=False)
        self.version = int_arg(self, "version", maximum=MAX_VERSION)
        # the size is checked at commit, like the public PUT
        self.expected_sha256, self.expected_size = self.parse_body_headers()
        self.hint_for = self.request.headers.get("X-Hint-For")
        space = getattr(self.node, "space", None)
        if space is not None:
            # refuse before any byte is read when the announced size would eat the reserve
            length = self.request.headers.get("Content-Length", "")
            incoming = int(length) if length.isdigit() else 0
            if space.short_of(incoming):
                try:   # in a disk thread: it may unlink retired blobs first
                    await self.ctx.run(space.check, incoming)
                except StoreFull as e:
                    raise HTTPFail(507, str(e))
        await self.begin_streamed_upload(self.store)

    def decoded_body_limit(self):
        """The node's own ``--max-body-size``, or the gateway's when that is smaller."""
        own = super().decoded_body_limit()
        text = self.request.headers.get(DECODED_LIMIT_HEADER, "").strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            return own
        return int(text) if own is None else min(own, int(text))

    async def put(self, path_arg):
        upload = await self.take_streamed_upload()  # ours now: a disconnection no longer drops it
        try:
            winner, applied = await self.ctx.run(self.store.commit_upload, upload, self.name, self.version,
                                                 expected_sha256=self.expected_sha256,
                                                 expected_size=self.expected_size)
        except (ChecksumMismatch, SizeMismatch) as e:
            raise HTTPFail(400, str(e))
        if self.hint_for and applied:
            self.node.hints_taken += 1
        self.send_record_headers(winner)
        self.set_header("X-Applied", "1" if applied else "0")
        self.set_header(UPLOAD_SHA256_HEADER, upload.sha256)
        self.finish()

    async def delete(self, path_arg):
        name, _ = name_from_path(path_arg, allow_version=False)
        version = int_arg(self, "version", maximum=MAX_VERSION)
        winner, applied = await self.ctx.run(self.store.delete, name, version)
        self.send_record_headers(winner)
        self.set_header("X-Applied", "1" if applied else "0")
        self.finish()

    async def get(self, path_arg):
        name, _ = name_from_path(path_arg, allow_version=False)
        record = await self.ctx.run(self.store.get_record, name)
        if self.request.method == "HEAD":
            self.finish_record_head(name, record)
            return
        if record is None:
            raise HTTPFail(404, "no record of %s" % name)
        if record.deleted:
            raise HTTPFail(404, "%s is deleted" % name, headers=record_headers(record))
        found = await self.ctx.run(self.store.open_record, name)
        if found is None:  # deleted in between
            record = await self.ctx.run(self.store.get_record, name)
            raise HTTPFail(404, "no record of %s" % name,
                           headers=record_headers(record) if record is not None else None)
        record, f = found
        await self.verify_blob(record.sha256, f, name)
        try:
            status, start, end = select_range(self, record.size)
        except BaseException:
            f.close()
            raise
        self.set_status(status)
        self.send_record_headers(record)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Content-Length", str(end - start))
        await send_file(self, self.ctx.run, f, start, end, self.ctx.chunk_size)
        self.finish()

    head = get


class BlobHandler(InternalHandler):
    """``GET /_cluster/blobs/<sha256>`` (Range honoured)."""

    async def get(self, sha):
        if not _SHA256_RE.match(sha):
            raise HTTPFail(400, "invalid sha256: %r" % sha[:80])
        try:
            f = await self.ctx.run(self.store.open_blob, sha)
        except FileNotFoundError:
            raise HTTPFail(404, "no blob %s" % sha)
        if self.request.method != "HEAD":
            await self.verify_blob(sha, f)
        try:
            size = await self.ctx.run(lambda: os.fstat(f.fileno()).st_size)
            status, start, end = select_range(self, size)
        except BaseException:
            f.close()
            raise
        self.set_status(status)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Content-Length", str(end - start))
        if self.request.method == "HEAD":
            f.close()
            self.finish()
            return
        await send_file(self, self.ctx.run, f, start, end, self.ctx.chunk_size)
        self.finish()

    head = get


class ListHandler(InternalHandler):
    """``GET /_cluster/list/<folder>?max_version=``: every record under folder, tombstones too."""

    async def get(self, path_arg=""):
        folder = folder_from_path(path_arg)
        max_version = int_arg(self, "max_version", required=False)

        def collect():
            return [[r.name, r.version, r.sha256, r.size, r.deleted]
                    for r in self.store.iter_folder(folder, max_version, include_deleted=True)]

        self.finish_msgpack(await self.ctx.run(collect))


class RecordsHandler(InternalHandler):
    """``POST /_cluster/records``: merge records whose blob is here; answer the missing blobs.

    Body: a msgpack list of record dicts.  A dict may carry its content as
    ``data`` (bytes, at most :data:`~cluster.peers.INLINE_BLOB_MAX`): when that
    record wins and its blob is not here, the content is stored (checked against
    the record's SHA-256 and size) and every such record of the request is
    committed in one group commit.  Answer: ``{"missing": [sha256, ...],
    "applied": n, "inline": m}``: the blobs still missing (no content sent, or
    content refused: a mismatch, no space), the records merged, and how many of
    them came with their content (the key tells a sender that this node takes
    inline content at all).
    """

    async def post(self):
        items = self.msgpack_body()
        if not isinstance(items, list) or len(items) > MAX_RECORDS_POSTED:
            raise HTTPFail(400, "expected a msgpack list of at most %d record dicts" % MAX_RECORDS_POSTED)
        try:
            records = [(Record.from_dict(d), d.get("data")) for d in items]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise HTTPFail(400, "malformed record: %s" % e)
        inline_bytes, taken = 0, []
        for r, data in records:
            try:
                check_name(r.name, allow_version=False)
            except InvalidNameError as e:
                raise HTTPFail(400, "invalid file name in record: %s" % e)
            # SQLite stores 64-bit integers: a larger one would fail the whole group commit
            if not (0 <= r.version < 2 ** 63 and 0 <= r.size < 2 ** 63):
                raise HTTPFail(400, "version and size of %s must be 0 .. 2**63-1" % r.name)
            if r.version > MAX_VERSION:
                # stored before versions were capped (no HTTP date can carry it: never answerable);
                # not spread further, and the rest of this sync batch still merged
                log.warning("record of %s at version %d (after year 9999) not merged", r.name, r.version)
                continue
            taken.append((r, data))
            if data is not None:
                if not isinstance(data, bytes) or len(data) > INLINE_BLOB_MAX:
                    raise HTTPFail(400, "the content of %s must be at most %d bytes (msgpack bin)"
                                   % (r.name, INLINE_BLOB_MAX))
                inline_bytes += len(data)
        if inline_bytes > INLINE_BATCH_BYTES:
            raise HTTPFail(413, "at most %d bytes of content in one request" % INLINE_BATCH_BYTES)
        self.finish_msgpack(await self.ctx.run(merge_records, self.store, taken, self.node.expired_before()))


def merge_records(store, records, expired_before=0):
    """Blocking: the answer of ``POST /_cluster/records`` for ``[(record, data or None)]``.
    A tombstone older than ``expired_before`` of a name with no record here is not taken
    (:func:`~filetracker.records.worth_copying`: this node may have reclaimed it just now)."""
    missing, applied, contents = [], 0, []
    for r, data in records:
        if not worth_copying(r, store.get_record(r.name), expired_before):
            continue
        if r.deleted or store.has_blob(r.sha256):
            try:
                applied += store.apply_record(r)[1]
                continue
            except BlobMissing:
                pass
        if data is None or r.deleted:
            missing.append(r.sha256)
        else:
            contents.append((r, data))
    inline = 0
    for (r, _), result in zip(contents, store_many(store, contents) if contents else [], strict=True):
        if isinstance(result, Exception):  # a mismatch, the reserve, a full disk: the sender keeps it
            log.warning("inline content of %s not stored: %s", r.name, result)
            missing.append(r.sha256)
        else:
            applied += result[1]
            inline += result[1]
    return {"missing": sorted(set(missing)), "applied": applied, "inline": inline}



class DigestsHandler(InternalHandler):
    """``GET /_cluster/digests``: ``{partition: digest}`` of every partition held here."""

    async def get(self):
        self.finish_msgpack(await self.ctx.run(self.store.digests.all))


class PartitionHandler(InternalHandler):
    """``GET /_cluster/partition/<p>``: record dicts of partition p."""

    async def get(self, p):
        p = int(p)
        if p >= self.node.ring.partitions:
            raise HTTPFail(400, "partition %d out of range (%d partitions)" % (p, self.node.ring.partitions))
        records = await self.ctx.run(lambda: [r.to_dict() for r in self.store.iter_records(p)])
        self.finish_msgpack(records)


class PartitionsHandler(InternalHandler):
    """``POST /_cluster/partitions``: the record dicts of several partitions in one request.

    Body: msgpack list of at most :data:`~cluster.peers.MAX_PARTITIONS_PER_REQUEST`
    partition numbers.  Answer: msgpack map ``{partition: [record dict, ...]}``
    (an empty list for a partition holding nothing), in the order asked, whole
    partitions only, stopping after the partition that brings the count to
    :data:`MAX_RECORDS_LISTED` (so at least one): the asker asks again for the
    rest.  Anti-entropy and handoff compare many small partitions per request
    with it instead of one each, and large ones still one at a time.
    """

    async def post(self):
        parts = self.msgpack_body()
        limit = self.node.ring.partitions
        if not isinstance(parts, list) or len(parts) > MAX_PARTITIONS_PER_REQUEST or \
                not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < limit for p in parts):
            raise HTTPFail(400, "expected a msgpack list of at most %d partition numbers below %d"
                           % (MAX_PARTITIONS_PER_REQUEST, limit))
        self.set_header("Content-Type", MSGPACK)
        self.finish(await self.ctx.run(list_partitions, self.store, parts))


def list_partitions(store, parts, limit=MAX_RECORDS_LISTED):
    """Blocking: the packed answer of ``POST /_cluster/partitions`` (packed here, off the event loop)."""
    out, count = {}, 0
    for p in dict.fromkeys(parts):
        out[p] = [r.to_dict() for r in store.iter_records(p)]
        count += len(out[p])
        if count >= limit:
            break
    return msgpack.packb(out)


class StatusHandler(InternalHandler):
    """``GET /_cluster/status``: JSON summary for operators and the admin CLI."""

    async def get(self):
        self.finish_json(await self.ctx.run(self.node.status))


class ForeignHandler(InternalHandler):
    """``GET /_cluster/foreign``: msgpack ``{"epoch", "partitions"}``, the partitions held here
    that this node does not own under its ring of that epoch (at most
    :data:`~cluster.node.state.FOREIGN_CACHE_SECONDS` old).  Gateways poll it to know where
    data still waits to move after a ring change (``cluster/gateway/holders.py``)."""

    async def get(self):
        epoch, partitions = await self.ctx.run(self.node.foreign_partitions)
        self.finish_msgpack({"epoch": epoch, "partitions": partitions})


class RunHandler(InternalHandler):
    """``POST /_cluster/run/<task>``: run one pass of a background task now (tests, admin)."""

    async def post(self, task):
        tasks = self.node.tasks
        if task == "all":
            names = ["handoff", "sync"]
        elif task in tasks:
            names = [task]
        else:
            raise HTTPFail(404, "no such task: %s (known: %s, all)" % (task, ", ".join(sorted(tasks))))
        out = {}
        for n in names:
            out[n] = await self.ctx.run(tasks[n].run_once)
        self.finish_json(out)


class VerifyHandler(InternalHandler):
    """``POST /_cluster/verify?repair=0|1``: every live record against its blob (the store's ``verify``).

    With ``repair=1`` a record whose blob is missing or corrupt is dropped (anti-entropy
    brings it back from a replica).  Answers JSON ``{checked, missing, corrupt, repaired}``.
    Added for ``filetracker-admin verify``.
    """

    async def post(self):
        repair = int_arg(self, "repair", required=False) == 1
        report = await self.ctx.run(self.store.verify, repair=repair)
        doc = {"checked": report.checked, "missing": list(report.missing),
               "corrupt": list(report.corrupt), "repaired": report.repaired}
        integrity = getattr(self.node, "integrity", None)
        if integrity is not None:   # bitrot found on reads/scrubs since start (cluster/node/integrity.py)
            doc["integrity"] = await self.ctx.run(integrity.summary)
        self.finish_json(doc)


def internal_routes(node, ctx):
    """URL specs of the internal API bound to ``node`` and ``ctx``."""
    kw = {"node": node, "ctx": ctx}
    return [
        tornado.web.url(r"/_cluster/ring", RingHandler, kw),
        tornado.web.url(r"/_cluster/draining", DrainingHandler, kw),
        tornado.web.url(r"/_cluster/files/(.*)", FileHandler, kw),
        tornado.web.url(r"/_cluster/blobs/([^/]*)", BlobHandler, kw),
        tornado.web.url(r"/_cluster/list", ListHandler, kw),
        tornado.web.url(r"/_cluster/list/(.*)", ListHandler, kw),
        tornado.web.url(r"/_cluster/records", RecordsHandler, kw),
        tornado.web.url(r"/_cluster/digests", DigestsHandler, kw),
        tornado.web.url(r"/_cluster/partition/([0-9]{1,7})", PartitionHandler, kw),
        tornado.web.url(r"/_cluster/partitions", PartitionsHandler, kw),
        tornado.web.url(r"/_cluster/status", StatusHandler, kw),
        tornado.web.url(r"/_cluster/foreign", ForeignHandler, kw),
        tornado.web.url(r"/_cluster/run/([a-z_]+)", RunHandler, kw),
        tornado.web.url(r"/_cluster/verify", VerifyHandler, kw),
    ]
