"""Handlers of the public filetracker protocol (PROTOCOL.md) over an ObjectStore.

They take everything they need from a :class:`FilesContext`, so the single
server and a cluster node mount the same handlers on their own store with
:func:`public_routes`.
"""

import asyncio
import functools
import json
import time
from dataclasses import dataclass, field

import tornado.web
from tornado.iostream import StreamClosedError

from filetracker.httpdate import format_version
from filetracker.ranges import content_range, unsatisfied_range
from filetracker.server import listing
from filetracker.server.base import (
    READ_ONLY,
    BaseHandler,
    HTTPFail,
    deleted_since,
    folder_from_path,
    name_from_path,
    no_such_file,
    request_version,
)
from filetracker.server.front import take_prefetched
from filetracker.server.streaming import open_for_read, send_file
from filetracker.server.upload_body import StreamedUploadMixin, UploadMemory
from filetracker.storage.errors import ChecksumMismatch, SizeMismatch

#: Listing lines fetched from the store per executor call.
_LIST_BATCH = 1000


@dataclass
class FilesContext:
    """What the public handlers need: the store, an executor and options.

    ``allow_writes=False`` answers PUT/DELETE with 403.  ``fallback``
    (migration mode, a :class:`filetracker.server.fallback.ServerFallback`)
    serves GET/HEAD of a name without any record from the old server, streamed.
    """

    store: object
    executor: object
    allow_writes: bool = True
    fallback: object = None
    chunk_size: int = 256 * 1024
    max_header_bytes: int = 64 * 1024
    #: a :class:`filetracker.storage.readcache.ReadCache` that ``store``'s writes invalidate, or None
    read_cache: object = None
    #: body bytes held by the uploads in progress (filetracker/server/upload_body.py)
    upload_memory: UploadMemory = field(default_factory=UploadMemory)

    async def run(self, fn, *args, **kwargs):
        """Run a blocking call in the executor and await its result."""
        run = getattr(self.executor, "run", None)
        if run is not None:  # a DiskExecutor (filetracker/server/offload.py): a cheaper hop
            return await run(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))


class CachedReads:
    """The answerer of the single server's fast front (:class:`filetracker.server.front.FastFront`):
    a GET/HEAD whose record (and, for GET, whole body) is in ``cache`` is answered at once, as
    :meth:`FilesHandler.get` answers it from the cache; anything else goes to that handler,
    marked as already looked up."""

    CONSULTED = True  # the prefetched value: "the cache had nothing usable"

    def __init__(self, cache):
        self.cache = cache

    def __call__(self, exchange):
        entry = self.cache.get(exchange.name, want_body=exchange.with_body)
        if entry is None or entry[0].deleted:
            exchange.hand_over(self.CONSULTED)
            return
        record, data = entry
        exchange.send_whole(record.version, record.size, data)


class ContextHandler(BaseHandler):
    """A BaseHandler given ``ctx`` (a :class:`FilesContext`) by its route."""

    def initialize(self, ctx):
        self.ctx = ctx
        self.max_header_bytes = ctx.max_header_bytes

    def require_writes(self):
        if not self.ctx.allow_writes:
            raise HTTPFail(403, READ_ONLY)


class VersionHandler(BaseHandler):
    """``GET /version/``: the protocol versions spoken."""

    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"protocol_versions": [2]}))

    head = get   # Tornado sends no body for HEAD


@tornado.web.stream_request_body
class FileHandler(StreamedUploadMixin, ContextHandler):
    """``/files/<name>``: GET, HEAD, PUT (streamed), DELETE."""

    # ------------------------------------------------------------------ PUT

    async def prepare(self):
        super().prepare()
        if self.request.method != "PUT":
            return
        self.require_writes()
        self.name, path_version = name_from_path(self.path_args[0] if self.path_args else "")
        self.version = request_version(self, path_version)
        self.expected_sha256, self.expected_size = self.parse_body_headers()
        fallback = self.ctx.fallback
        if fallback is not None and fallback.wanted(self.request) and \
                not await fallback.copy_if_newer(self.name, self.version):
            # migration (see ServerFallback): the old server's newer file must be in before this write
            raise HTTPFail(502, "the old server holds a newer version of %s that could not be copied in; "
                                "try again" % self.name)
        await self.begin_streamed_upload(self.ctx.store)

    async def put(self, path_arg):
        upload = await self.take_streamed_upload()  # ours now: a disconnection no longer drops it
        try:
            winner, applied = await self.ctx.run(
                self.ctx.store.commit_upload, upload, self.name, self.version,
                expected_sha256=self.expected_sha256, expected_size=self.expected_size)
        except (ChecksumMismatch, SizeMismatch) as e:
            raise HTTPFail(400, str(e))
        if not applied and winner.deleted:
            raise deleted_since(self.name, winner.version, self.version)
        # the same content at the same version again changes nothing, yet it is this upload's
        same = winner.version == self.version and winner.sha256 == upload.sha256
        self.answer_put(winner, applied or same, self.version)

    # ------------------------------------------------------------------ GET / HEAD

    async def get(self, path_arg):
        # the fast front (CachedReads) found no usable entry: not asked twice (nor counted twice)
        consulted = take_prefetched(self.request) is not None
        name, _version = name_from_path(path_arg)
        want_body = self.request.method != "HEAD"
        range_header = self.request.headers.get("Range")
        cache = self.ctx.read_cache if range_header is None else None
        if cache is not None:
            entry = None if consulted else cache.get(name, want_body=want_body)
            if entry is not None and not entry[0].deleted:
                self.send_whole(entry[0], entry[1] if want_body else b"")
                return
            generation = cache.generation(name)
        plan = await self.ctx.run(open_for_read, self.ctx.store, name, range_header,
                                  want_body, self.ctx.chunk_size)
        if cache is not None and plan is not None and plan.unsatisfiable is None:
            whole = want_body and plan.f is None and len(plan.first) == plan.record.size
            cache.fill(name, plan.record, plan.first if whole else None, generation)
        if plan is None:
            fallback = self.ctx.fallback
            if fallback is not None and fallback.wanted(self.request):
                # only a name without any record: a tombstone here means the delete wins
                if await self.ctx.run(self.ctx.store.get_record, name) is None:
                    await fallback.serve(self, name, want_body)
                    return
            raise no_such_file(name)
        record = plan.record
        if plan.unsatisfiable is not None:
            raise HTTPFail(416, str(plan.unsatisfiable),
                           headers={"Content-Range": unsatisfied_range(record.size)})
        self.set_status(plan.status)
        if plan.status == 206:
            self.set_header("Content-Range", content_range(plan.start, plan.end - 1, record.size))
        self._file_headers(record, plan.end - plan.start)
        if plan.first:
            self.write(plan.first)
        if plan.f is not None:
            await send_file(self, self.ctx.run, plan.f, plan.start + len(plan.first), plan.end,
                            self.ctx.chunk_size, seek=False)
        self.finish()

    head = get

    def _file_headers(self, record, length):
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Last-Modified", format_version(record.version))
        self.set_header("Content-Length", str(length))

    def send_whole(self, record, data):
        """A 200 answer with the whole body ``data`` of ``record`` (b"" for HEAD), as :meth:`get` sends it."""
        self._file_headers(record, record.size)
        self.finish(data)

    # ------------------------------------------------------------------ DELETE

    async def delete(self, path_arg):
        self.require_writes()
        name, path_version = name_from_path(path_arg)
        version = request_version(self, path_version)
        record = await self.ctx.run(self.ctx.store.get_record, name)
        done = None
        if record is None and self.ctx.fallback is not None:
            # a name only the old server holds: the tombstone written here hides it for good
            done = await self.ctx.fallback.delete_hidden(name, version)
        if done is None and (record is None or record.deleted):
            raise no_such_file(name)
        winner, _ = done or await self.ctx.run(self.ctx.store.delete, name, version)
        self.answer_delete(winner, version)


class ListHandler(ContextHandler):
    """``GET /list/<folder>?last_modified=``: names relative to folder, one a line.

    With ``details=1`` (an extension, see :mod:`filetracker.server.listing`)
    each line is ``name TAB version TAB size`` and the answer carries
    ``X-List-Format: details``; in migration mode the old server's names have
    no records here, so the plain listing is sent (without the header).
    """

    async def get(self, path_arg=""):
        folder = folder_from_path(path_arg)
        max_version = request_version(self, required=False)
        if max_version is None:
            max_version = int(time.time())
        prefix = folder if folder.endswith("/") else folder + "/"
        fallback = self.ctx.fallback
        details = False
        if fallback is not None and fallback.wanted(self.request):
            names = await self._with_old_names(fallback, folder, max_version)
        elif listing.wants_details(self):
            details = True
            records = self.ctx.store.iter_folder(folder, max_version)
        else:
            names = self.ctx.store.list_names(folder, max_version)

        def batch():
            out = []
            if details:
                for r in records:
                    out.append(listing.details_line(r.name, prefix, r.version, r.size))
                    if len(out) >= _LIST_BATCH:
                        break
                return out
            for name in names:
                out.append(name[len(prefix):] + "\n")
                if len(out) >= _LIST_BATCH:
                    break
            return out

        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if details:
            self.set_header(listing.FORMAT_HEADER, listing.DETAILS)
        sent = 0
        while True:
            lines = await self.ctx.run(batch)
            if not lines:
                break
            sent += len(lines)
            self.write("".join(lines))
            if len(lines) < _LIST_BATCH:
                break
            try:
                await self.flush()
            except StreamClosedError:
                return   # the client stopped reading: nothing to answer it (Tornado logged an ERROR)
        own = listing.self_name(folder)
        if details and not sent and own is not None:
            # Nothing flushed yet, so a header can still be set.
            record = await self.ctx.run(self.ctx.store.get_record, own)
            self.set_header(listing.SELF_HEADER, listing.self_value(record, max_version))
        self.finish()

    head = get   # the same answer without its body (Tornado sends none for HEAD)

    async def _with_old_names(self, fallback, folder, max_version):
        """Migration mode: the live names here plus the old server's names that
        have no record here (a newer file or a tombstone here wins), sorted."""
        old_names = await fallback.list_names(folder, max_version)

        def local():
            return {r.name: r.deleted or r.version > max_version
                    for r in self.ctx.store.iter_folder(folder, include_deleted=True)}

        hidden = await self.ctx.run(local)
        merged = {name for name, gone in hidden.items() if not gone}
        merged.update(name for name in old_names if name not in hidden)
        return iter(sorted(merged))


def public_routes(ctx, prefix=""):
    """URL specs of the public protocol bound to ``ctx`` (a :class:`FilesContext`).

    ``prefix`` (e.g. ``""``) is prepended to every path.
    """
    kw = {"ctx": ctx}
    return [
        tornado.web.url(prefix + r"/version/?", VersionHandler,
                        {"max_header_bytes": ctx.max_header_bytes}),
        tornado.web.url(prefix + r"/files/(.*)", FileHandler, kw),
        tornado.web.url(prefix + r"/list", ListHandler, kw),
        tornado.web.url(prefix + r"/list/(.*)", ListHandler, kw),
    ]
