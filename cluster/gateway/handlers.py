"""Public protocol handlers of the gateway (PROTOCOL.md): /version/, /files/<name>, /list/<folder>.

Every handler gets the shared :class:`cluster.gateway.app.Services` through
``initialize``; errors are a status code, a one-line ``X-Exception`` header
and a short plain-text body, never a traceback.
"""

import asyncio
import logging
import time
from urllib.parse import quote

import msgpack
from tornado import web
from tornado.iostream import StreamClosedError

from cluster.gateway import listing
from cluster.gateway.fastpath import DIRECT_FAILED
from cluster.gateway.pool import ConnectionFailed
from cluster.gateway.reads import direct_read, fetch_piece, open_body, quorum_read, read_repair, widen_read
from cluster.gateway.smallput import batchable, batched_put, small_body
from cluster.gateway.view import NoRing
from cluster.gateway.writes import PutFanout, quorum_delete
from filetracker.httpdate import format_version
from filetracker.ranges import RangeNotSatisfiable, content_range, parse_range, unsatisfied_range
from filetracker.records import Record, merge
from filetracker.server.base import BaseHandler as ServerBaseHandler
from filetracker.server.base import (
    HTTPFail,
    deleted_since,
    folder_from_path,
    logged_path,
    name_from_path,
    no_such_file,
    request_version,
)
from filetracker.server.front import take_prefetched
from filetracker.server.observe import count_sent
from filetracker.server.upload_body import check_body_headers

log = logging.getLogger(__name__)

#: uploads are streamed, so the body size limit only guards against nonsense
MAX_BODY_SIZE = 1 << 44


class BaseHandler(ServerBaseHandler):
    """The project's error answers (:mod:`filetracker.server.base`) plus the gateway's services."""

    services = None  # set by initialize(services=...)

    def log_exception(self, typ, value, tb):
        # An error answer we chose (503 included: a node being down is expected) is one log line.
        if isinstance(value, HTTPFail):
            log.info("%s %s -> %d: %s", self.request.method, logged_path(self.request.path), value.status_code,
                     value.message)
            return
        super().log_exception(typ, value, tb)

    async def ring(self):
        try:
            return await self.services.view.get_ring()
        except NoRing as exc:
            raise HTTPFail(503, str(exc))


@web.stream_request_body
class FilesHandler(BaseHandler):
    """PUT streams to N replicas (one of at most 64 KiB goes in batches, cluster/gateway/smallput.py);
    GET/HEAD read a quorum; DELETE writes a tombstone."""

    takes_upload_slot = True   # a PUT counts towards the guard's --max-uploads
    _fanout = None
    _small = None       # body pieces of a small PUT (cluster/gateway/smallput.py)
    _prefetched = None

    async def prepare(self):
        # taken first, whatever happens next: a keep-alive connection must not keep it
        self._prefetched = take_prefetched(self.request)
        super().prepare()
        if self.request.method != "PUT":
            return
        self.request.connection.set_max_body_size(MAX_BODY_SIZE)
        name, path_version = name_from_path(self.path_args[0] if self.path_args else "")
        self._target = (name, request_version(self, path_version))  # of the PUT
        # refused as the server refuses them, before any byte is asked for (Expect: 100-continue)
        check_body_headers(self.request.headers)
        await self.ring()
        fallback = self.services.fallback
        if fallback is not None and fallback.wanted(self.request) and not await fallback.copy_if_newer(*self._target):
            # migration (see Fallback): the old server's newer file must be in before this write
            raise HTTPFail(502, "the old server holds a newer version of %s that could not be copied in; "
                                "try again" % name)
        if self.services.config.batch_writes and batchable(self.request.headers, self._target[1]):
            self._small = []  # received whole (Tornado holds it to Content-Length), stored in batches
            return
        self._fanout = await self._open_fanout()

    async def _open_fanout(self):
        """A :class:`PutFanout` connected to at least W targets (else the error answer)."""
        fanout = PutFanout(self.services, *self._target, self.request.headers)
        if not await fanout.open():
            fanout.abort()
            outcome = fanout.open_failure()
            raise HTTPFail(outcome.status, outcome.message, headers=outcome.headers)
        return fanout

    async def data_received(self, chunk):
        if self._small is not None:
            self._small.append(chunk)
        elif self._fanout is not None and not self._finished:
            await self._fanout.feed(chunk)

    def on_connection_close(self):
        if self._fanout is not None and not self._finished:
            self._fanout.abort()
        super().on_connection_close()  # ends the body wait and frees the upload slot (guard)

    async def put(self, path):
        if self._small is not None:
            outcome = await self._put_small(b"".join(self._small))
        else:
            outcome = await self._fanout.finish()
        if outcome.status != 200:
            raise HTTPFail(outcome.status, outcome.message, headers=outcome.headers)
        winner, version = outcome.record, self._target[1]
        if winner.deleted:
            raise deleted_since(self._target[0], winner.version, version)
        # at an equal version the replicas' winner may be another upload's (a larger SHA-256):
        # told apart by this upload's checksum, announced by the client or else found by the
        # nodes (or the gateway, for a small body); "" only from nodes too old to say it
        ours = self.request.headers.get("SHA256-Checksum", "").strip().lower() or outcome.sent_sha256
        self.answer_put(winner, winner.version == version and ours in ("", winner.sha256), version)

    async def _put_small(self, raw):
        """The outcome of a small PUT whose body (as sent) is ``raw``: batched to the replicas,
        or streamed like a large one when :func:`small_body` cannot take it as it is."""
        self._small = None
        body = small_body(self.request.headers, raw)
        if body is not None:
            return await batched_put(self.services, *self._target, body)
        self._fanout = await self._open_fanout()
        await self._fanout.feed(raw)
        return await self._fanout.finish()

    async def get(self, path):
        await self._serve(path, with_body=True)

    async def head(self, path):
        await self._serve(path, with_body=False)

    async def _serve(self, path, with_body):
        name, _version = name_from_path(path)  # the client checks the version it gets
        await self.ring()
        # HEAD ignores Range (like our server and a plain file server): 200, full length
        range_header = self.request.headers.get("Range") if with_body else None
        # Usually one round trip: R owners asked at once, the first one for the body too
        # (already made when the fast path handed the request over: fastpath.py).
        if self._prefetched is not None:
            direct = self._prefetched.value
            self._prefetched = None
            if direct is DIRECT_FAILED:
                direct = None
        else:
            direct = None if range_header is not None else await direct_read(self.services, name, with_body)
        data = url = None
        # Two attempts: when every replica holding the winner fails before the first
        # byte (e.g. it just died), they are now marked down and a new quorum read
        # finds the winner on the others.
        for attempt in range(2):
            if direct is not None:
                read, data = direct.read, direct.first
                direct = None
            else:
                read = await quorum_read(self.services, name)
                self.services.spawn(read_repair(self.services, read))
                data = None
            if not read.enough:
                raise HTTPFail(503, "not enough replicas: %d of the needed replicas answered"
                               % len(read.answers))
            wider = await widen_read(self.services, read)
            if wider is not read:  # a miss, but another owner has it: serve it, repair the others
                read, data = wider, None
                self.services.spawn(read_repair(self.services, read))
            winner = read.winner
            fallback = self.services.fallback
            if winner is None and fallback is not None and fallback.wanted(self.request):
                # no record at all (a tombstone is a record: the delete wins): ask the old server
                await fallback.serve(self, name, with_body)
                return
            if winner is None or winner.deleted:
                raise no_such_file(name)
            size = winner.size
            try:
                rng = parse_range(range_header, size)
            except RangeNotSatisfiable as exc:
                raise HTTPFail(416, str(exc), headers={"Content-Range": unsatisfied_range(size)})
            start, end = rng if rng is not None else (0, size - 1)
            if not with_body or end < start:
                break
            holders = read.holders()
            piece_end = min(start + self.services.config.range_size - 1, end)
            if data is not None:  # the direct read brought the first piece
                url = holders[0]
                break
            data, url = await fetch_piece(self.services, holders, winner.sha256, start, piece_end)
            if data is not None:
                break
            if attempt:
                raise HTTPFail(503, "no replica could deliver %s" % name)
            log.warning("GET %s: no holder of the winner delivered it; reading the quorum again", name)
        if rng is not None:
            self.set_status(206)
            self.set_header("Content-Range", content_range(start, end, size))
        self.set_header("Last-Modified", format_version(winner.version))
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Content-Length", str(end - start + 1))
        if not with_body or end < start:
            self.finish()
            return
        if piece_end >= end:  # the whole answer is in hand
            self.finish(data)
            return
        await self._stream_body(name, winner, holders, url, data, piece_end + 1, end)

    async def _stream_body(self, name, winner, holders, url, data, pos, end):
        """Send ``data`` (the first piece, from ``url``), then bytes ``pos..end`` relayed
        from one holder as they arrive.

        Memory stays bounded: the node's connection stops reading while
        :data:`~cluster.gateway.pool.STREAM_HIGH_WATER` bytes wait, and a batch
        is taken only once the client took every byte of the one before (the
        stream's own write future, counted in bytes: Tornado's per-write
        futures of ``HTTP1Connection`` resolve early when several are pending).
        When the holder fails midway (closed, or no byte for ``timeout``
        seconds), the rest is asked from the next holder with a Range starting
        at the byte reached, so the client gets every byte once; when a whole
        round of holders brings no byte, the connection is closed (the client
        sees a short body, never a wrong one).
        """
        services = self.services
        timeout = services.config.timeout
        order = [url] + [u for u in holders if u != url]  # the replica that just worked first
        conn = self.request.connection
        self.write(data)
        del data
        first = self.flush()  # headers and the first piece, while the rest is asked for
        body = None
        fruitless = 0  # holders in a row that failed before bringing a byte
        try:
            while pos <= end:
                if body is None:
                    if fruitless < len(order):
                        body, url = await open_body(services, order, winner.sha256, pos, end)
                    if body is None:
                        # mid-answer: closing is the only honest thing left
                        log.error("GET %s: every replica failed at byte %d; closing", name, pos)
                        conn.close()
                        return
                    opened_at = pos
                try:
                    chunks = await body.take(timeout)
                except ConnectionFailed as exc:
                    if body.held_for < timeout:  # else we held it back (a slow client): it may give up
                        services.client.failed(url, "GET %s at byte %d: %s" % (name, pos, exc))
                    log.warning("GET %s: %s failed at byte %d (%s); going on from another replica",
                                name, url, pos, exc)
                    body.close()
                    body = None
                    fruitless = fruitless + 1 if pos == opened_at else 0
                    order = [u for u in order if u != url] + [url]
                    continue
                if first is not None:  # written through Tornado: done before writing around it
                    await first
                    first = None
                start = pos
                for chunk in chunks:  # straight to the connection: no copy into one buffer
                    conn.write(chunk)
                    pos += len(chunk)
                count_sent(self.request, pos - start)  # the output transform does not see these
                await self.bounded(conn.stream.write(b""))  # every byte so far taken by the client
            if first is not None:
                await first
        except StreamClosedError:
            return  # the client went away
        finally:
            if body is not None:
                body.close()
        self.finish()

    async def delete(self, path):
        name, path_version = name_from_path(path)
        version = request_version(self, path_version)
        await self.ring()
        read = await quorum_read(self.services, name)
        if not read.enough:
            raise HTTPFail(503, "not enough replicas: %d of the needed replicas answered"
                               % len(read.answers))
        read = await widen_read(self.services, read)
        fallback = self.services.fallback
        if fallback is not None and not fallback.wanted(self.request):
            fallback = None
        if read.winner is None and fallback is not None:
            # a name only the old server holds: a newer file there is copied in first, so
            # that the tombstone written below loses to it as the merge rule says
            held = await fallback.old_version(name)
            if held is None:
                raise no_such_file(name)
            if held > version and not await fallback.copy_in(name):
                self.answer_delete(Record(name, held, "", 0), version)   # not copied: nothing deleted
                return
        elif read.winner is None or read.winner.deleted:
            raise no_such_file(name)
        outcome = await quorum_delete(self.services, name, version)
        if outcome.status != 200:
            raise HTTPFail(outcome.status, outcome.message)
        winner = outcome.record
        if fallback is not None and winner.deleted and winner.version == version:
            # the tombstone lasts --tombstone-ttl on the nodes; then the old copy would be
            # served (and copied back) again: the old server deletes it too
            await fallback.delete_old(name, version)
        self.answer_delete(winner, version)


class ListHandler(BaseHandler):
    """Scatter the listing to every live node, merge per name, omit tombstones."""

    async def get(self, path=""):
        folder = folder_from_path(path)
        max_version = request_version(self, required=False)
        if max_version is None:
            max_version = int(time.time())
        await self.ring()
        view = self.services.view
        nodes = view.all_nodes()
        # every record, not only those up to the bound: a replica that missed a newer version or a
        # delete must be outvoted by the merge, which a node-side bound would hide from it
        quorum = min(self.services.config.write_quorum, int(view.ring.n_replicas))
        needed = max(1, len(nodes) - quorum + 1)
        path = "/_cluster/list%s" % quote(folder, safe="/")
        live = [n for n in nodes if view.is_live(n.url)]
        # too few live: the nodes marked down are asked too (a stale mark, a node just back, must
        # not cost a certain 503, as reads do), but waited for only until enough answered
        marked = [self.services.spawn_request(n.url, "GET", path) for n in nodes
                  if len(live) < needed and not view.is_live(n.url)]
        answered = [r for r in [await r for r in [self.services.spawn_request(n.url, "GET", path)
                                                  for n in live]] if r.code == 200]
        pending = set(marked)
        while pending and len(answered) < needed:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            answered += [t.result() for t in done if t.result().code == 200]
        for task in pending:
            self.services.keep(task)   # answers nobody waits for any more
        if len(answered) < needed:
            raise HTTPFail(503, "not enough replicas: %d of %d nodes answered the listing"
                               % (len(answered), len(nodes)))
        merged = {}
        for reply in answered:
            for name, version, sha256, size, deleted in msgpack.unpackb(reply.body, raw=False):
                rec = Record(name=name, version=int(version), sha256=sha256 or "", size=int(size or 0),
                             deleted=bool(deleted))
                merged[name] = merge(merged.get(name), rec)
        fallback = self.services.fallback
        migrating = fallback is not None and fallback.wanted(self.request)   # not with X-No-Fallback
        if migrating:
            # migration mode: the old server's names too, unless the cluster has a record
            # (a newer file or a tombstone) for them
            for name in await fallback.list_names(folder, max_version):
                if name not in merged:
                    merged[name] = Record(name=name, version=0, sha256="", size=0, deleted=False)
        details = listing.wants_details(self, migrating=migrating)
        body, headers = await listing.answer(self.services, merged, folder, max_version, details)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        for key, value in headers.items():
            self.set_header(key, value)
        self.finish(body)

    head = get   # the same answer without its body (Tornado sends none for HEAD)


