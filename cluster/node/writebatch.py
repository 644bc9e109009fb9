"""``POST /_cluster/store``: the small PUTs a gateway sends to this node, many in one request.

A gateway under write load holds at most one of these in flight per node and
puts every small upload that arrives meanwhile into the next one (see
:class:`cluster.gateway.smallput.StoreBatcher`): the node answers one request
cycle and one executor hop per batch instead of per file, and the batch's
records share one group commit.  Each file is stored exactly as
``PUT /_cluster/files/<name>?version=<v>`` stores it (temporary file, write,
fsync, rename, record commit: the same durability), and each gets its own
answer, so one file refused never fails the others.

Body: a msgpack list of at most :data:`~cluster.peers.INLINE_BATCH_COUNT` maps
``{"name", "version", "data", "sha256", "size", "hint"}``: ``data`` the plain
content (at most :data:`~cluster.peers.INLINE_BLOB_MAX` bytes, at most
:data:`~cluster.peers.INLINE_BATCH_BYTES` in all), ``sha256`` / ``size`` the
announced checksum and logical size (None: not announced; a mismatch is that
file's 400), ``hint`` the id of the owner this node stands in for (None when
it is an owner itself).  A malformed file map is that file's 400; a body that
is not a list of at most that many maps is answered 400 as a whole, more
content than that 413.

Answer: a msgpack list, one row per file, in order:
``["ok", version, sha256, size, deleted, applied]`` (the winning record after
the merge, as the record headers of a PUT answer describe it; ``applied`` as
``X-Applied``), or ``["error", status, message]`` (400 checksum or size
mismatch, 507 no space / the reserve).  A batch takes one of the node's
``--max-uploads`` slots while it is stored: with none free the whole request is
answered 503 + ``Retry-After``, as a streamed PUT would be.
"""

import logging

import tornado.web

from cluster.node.batches import store_many
from cluster.node.internal import InternalHandler
from cluster.peers import INLINE_BATCH_BYTES, INLINE_BATCH_COUNT, INLINE_BLOB_MAX
from filetracker.errors import InvalidNameError
from filetracker.httpdate import MAX_VERSION
from filetracker.names import check_name
from filetracker.server import HTTPFail
from filetracker.server.guard import SETTING as GUARD_SETTING
from filetracker.storage import ChecksumMismatch, SizeMismatch, StoreFull
from filetracker.storage.store import is_sha256

log = logging.getLogger(__name__)



class Wanted:
    """One file of a batch: what :meth:`ObjectStore.commit_uploads` checks the content against."""

    __slots__ = ("name", "version", "sha256", "size", "hint")

    def __init__(self, name, version, sha256, size, hint):
        self.name = name
        self.version = version
        self.sha256 = sha256
        self.size = size
        self.hint = hint


def parse_items(items):
    """One entry per file of a decoded request body: ``(Wanted, data)``, or the answer row
    ``["error", 400, message]`` of a malformed file (the others are stored all the same).

    :class:`HTTPFail` for the request as a whole: 400 when it is not a list of at most
    :data:`~cluster.peers.INLINE_BATCH_COUNT` entries, 413 above
    :data:`~cluster.peers.INLINE_BATCH_BYTES` of content.
    """
    if not isinstance(items, list) or len(items) > INLINE_BATCH_COUNT:
        raise HTTPFail(400, "expected a msgpack list of at most %d file maps" % INLINE_BATCH_COUNT)
    out, total = [], 0
    for item in items:
        try:
            wanted, data = parse_item(item)
        except ValueError as e:
            out.append(["error", 400, str(e)])
            continue
        total += len(data)
        out.append((wanted, data))
    if total > INLINE_BATCH_BYTES:
        raise HTTPFail(413, "at most %d bytes of content in one request" % INLINE_BATCH_BYTES)
    return out


def parse_item(item):
    """``(Wanted, data)`` of one file map; ``ValueError`` saying what is wrong with it."""
    if not isinstance(item, dict):
        raise ValueError("every file of the batch must be a map")
    name, version, data = item.get("name"), item.get("version"), item.get("data")
    sha256, size, hint = item.get("sha256"), item.get("size"), item.get("hint")
    try:
        check_name(name if isinstance(name, str) else "", allow_version=False)
    except InvalidNameError as e:
        raise ValueError("invalid file name in batch: %s" % e) from None
    # SQLite stores 64-bit integers: a larger one would fail the whole group commit
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise ValueError("the version of %s must be an integer 0 .. %d" % (name, MAX_VERSION))
    if not isinstance(data, bytes) or len(data) > INLINE_BLOB_MAX:
        raise ValueError("the content of %s must be at most %d bytes (msgpack bin)" % (name, INLINE_BLOB_MAX))
    if sha256 is not None and not is_sha256(sha256):
        raise ValueError("the sha256 of %s must be 64 lowercase hex digits" % name)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2 ** 63):
        raise ValueError("the size of %s must be an integer 0 .. 2**63-1" % name)
    if hint is not None and not isinstance(hint, str):
        raise ValueError("the hint of %s must be a node id" % name)
    return Wanted(name, version, sha256, size, hint), data


def answer_row(result):
    """The answer row of one file: the ``(winner, applied)`` stored, or the error it met."""
    if isinstance(result, tuple):
        winner, applied = result
        return ["ok", winner.version, winner.sha256, winner.size, winner.deleted, bool(applied)]
    if isinstance(result, (ChecksumMismatch, SizeMismatch)):
        return ["error", 400, str(result)]
    if isinstance(result, StoreFull):
        return ["error", 507, str(result)]
    log.warning("small PUT not stored: %s: %s", type(result).__name__, result)
    return ["error", 500, "%s: %s" % (type(result).__name__, result)]


class StoreHandler(InternalHandler):
    """``POST /_cluster/store`` (module docstring)."""

    async def post(self):
        items = parse_items(self.msgpack_body())
        slots = self._upload_slot()
        try:
            self.finish_msgpack(await self._store(items))
        finally:
            if slots is not None:
                slots.release()

    def _upload_slot(self):
        """Take one of the node's ``--max-uploads`` slots for the batch (503 + ``Retry-After``
        when none is free, as a streamed PUT is refused); the slots, or None without a guard."""
        guard = self.application.settings.get(GUARD_SETTING)
        if guard is None:
            return None
        if not guard.uploads.try_acquire():
            raise HTTPFail(503, "too many uploads in progress (limit %d); retry later" % guard.uploads.limit,
                           headers={"Retry-After": str(guard.limits.retry_after)})
        return guard.uploads

    async def _store(self, items):
        space = getattr(self.node, "space", None)
        rows = [None] * len(items)
        todo, where = [], []
        for i, entry in enumerate(items):
            if isinstance(entry, list):  # a malformed file: its answer row
                rows[i] = entry
                continue
            wanted, data = entry
            if space is not None and space.short_of(len(data)):
                # the check a PUT makes before reading its body, file by file; in a disk
                # thread, since it may unlink retired blobs first
                try:
                    await self.ctx.run(space.check, len(data))
                except StoreFull as e:
                    rows[i] = ["error", 507, str(e)]
                    continue
            todo.append((wanted, data))
            where.append(i)
        if todo:
            results = await self.ctx.run(store_many, self.store, todo)
            for i, (wanted, _), result in zip(where, todo, results, strict=True):
                rows[i] = answer_row(result)
                if isinstance(result, tuple):
                    self.node.batched_files += 1
                if wanted.hint and isinstance(result, tuple) and result[1]:
                    self.node.hints_taken += 1
        return rows


def writebatch_routes(node, ctx):
    """The URL spec of ``POST /_cluster/store``."""
    return [tornado.web.url(r"/_cluster/store", StoreHandler, {"node": node, "ctx": ctx})]
