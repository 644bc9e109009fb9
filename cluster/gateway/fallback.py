"""Read-through to an old filetracker server during a migration (``--fallback-url``).

The gateway's GET/HEAD handler calls :meth:`Fallback.serve` when the cluster
holds *no record at all* for a name (a tombstone is a record: a name deleted
in the cluster never falls back, the delete wins).  The old server's answer
is streamed through to the client (not a redirect): plain bytes, gzip from a
2.x server decoded on the way, with flow control (the old server is read no
faster than the client takes the bytes), so memory per request is one chunk.

Unless ``copy`` is off (``--fallback-no-copy``), the file is then copied into
the cluster *in the background* with its original version, through the
gateway's own write path (:class:`cluster.gateway.writes.PutFanout`), so it
is replicated like any client write.  The merge rule protects newer data: a
file written or deleted by a client meanwhile keeps its newer record.

:meth:`Fallback.old_version` lets the DELETE handler delete a name that only
the old server holds: it writes a tombstone in the cluster, and a delete that
takes effect is made on the old server too (:meth:`Fallback.delete_old`): the
nodes reclaim tombstones after ``--tombstone-ttl``, and the old copy would then
be served, and copied back, again.  Before a PUT or DELETE,
:meth:`Fallback.copy_if_newer` copies in a newer file the old server holds, so
an older write changes nothing, as once the name is imported.

Answers served from the old server carry ``X-Fallback: 1``; a request
with ``X-No-Fallback: 1`` never falls back (``filetracker-admin import``
sends it to learn what the *cluster* holds, so importing through a gateway
in migration mode works).

Only the public protocol of the old server is used (``GET``/``HEAD
/files/<name>``), so it works with a 2.x server or one of ours.  The client
of the old server and the streamed answer itself live in
:mod:`filetracker.server.oldserver`, shared with ``filetracker-server --fallback-url``
(its messages name the old server without the URL's credentials).
"""

import logging
import time

from tornado import httputil

from cluster.gateway.writes import PutFanout
from filetracker.server import oldserver
from filetracker.server.oldserver import OldServer, OldServerError, PlainDecoder, logical_size, version_of

log = logging.getLogger(__name__)

#: at most this many background copies run at once; more requests for
#: other names are not queued (a later read or the bulk import copies them)
MAX_COPIES = 4


class Fallback:
    """Serves names the cluster does not hold from the old server at ``url``.

    ``services`` is the gateway's :class:`cluster.gateway.app.Services`
    (background tasks, view, node connections); ``copy`` enables the
    background copy into the cluster.
    """

    def __init__(self, services, url, copy=True, timeout=None):
        self._s = services
        self.copy = copy
        # credentials of url travel only as HTTP Basic: never in a message (OldServer.url)
        self.old = OldServer(services.tcp, url, timeout or max(services.config.timeout, 10.0))
        self.url = self.old.url
        self._copying = set()
        self.copies_done = 0
        self.copies_failed = 0

    # ------------------------------------------------------------------ reads

    wanted = staticmethod(oldserver.wanted)

    async def serve(self, handler, name, with_body):
        """Answer ``handler``'s GET/HEAD for ``name`` from the old server
        (:func:`filetracker.server.oldserver.stream_to_client`: 404 when the old
        server does not have it either, 502 when it cannot answer), then copy it
        into the cluster in the background."""
        version = await oldserver.stream_to_client(self.old, handler, name, with_body, log)
        if version is None:
            return
        log.info("fallback %s %s@%d served from %s", "GET" if with_body else "HEAD", name, version, self.old.url)
        if self.copy:
            self.schedule_copy(name)

    async def old_version(self, name):
        """The version the old server holds for ``name`` (HEAD), or None when it has none.
        Raises :class:`HTTPFail` 502 when the old server cannot tell."""
        return await oldserver.old_version(self.old, name)

    async def copy_if_newer(self, name, version):
        """Before a write of ``name`` at ``version``: when the old server holds a newer version,
        copy it into the cluster now (see :func:`filetracker.server.oldserver.newer_version`).
        False only when there is one and it could not be copied (:meth:`_copy` logs why)."""
        held = await oldserver.newer_version(self.old, name, version, log)
        return held is None or await self.copy_in(name)

    async def copy_in(self, name):
        """Copy ``name`` from the old server into the cluster now; True when done."""
        return await self._copy(name, scheduled=False)

    async def delete_old(self, name, version):
        """After a delete of ``name`` at ``version`` took effect in the cluster: the same on the
        old server, so the old copy does not come back once the tombstone is reclaimed."""
        return await oldserver.delete_at(self.old, name, version, log)

    async def list_names(self, folder, max_version):
        """Full names the old server lists under ``folder`` (see :func:`filetracker.server.oldserver.list_names`)."""
        return await oldserver.list_names(self.old, folder, max_version)

    # ------------------------------------------------------------------ background copy

    def schedule_copy(self, name):
        """Start copying ``name`` into the cluster unless a copy of it runs already
        or :data:`MAX_COPIES` run (a later read, or the bulk import, will copy it)."""
        if name in self._copying or len(self._copying) >= MAX_COPIES:
            return False
        self._copying.add(name)
        self._s.spawn(self._copy(name))
        return True

    async def _copy(self, name, scheduled=True):
        """Copy ``name`` from the old server into the cluster; True when the cluster then holds
        it (or a newer record).  ``scheduled``: started by :meth:`schedule_copy`."""
        started = time.monotonic()
        fanout = None
        resp = None
        try:
            await self._s.view.get_ring()
            resp = await self.old.request("GET", name)
            if resp.code != 200:
                raise OldServerError("the old server answered %d" % resp.code)
            version = version_of(resp.headers)
            headers = httputil.HTTPHeaders()
            size = logical_size(resp.headers)
            if size is not None:
                headers["Content-Length"] = str(size)
            fanout = PutFanout(self._s, name, version, headers)
            if not await fanout.open():
                raise OldServerError("not enough replicas reachable")
            decoder = PlainDecoder(resp.headers)
            async for raw in resp.body():
                for data in decoder.feed(raw):
                    await fanout.feed(data)  # decoded pieces (up to 1 MiB) are sliced by the fan-out
            decoder.close()
            outcome = await fanout.finish()
            fanout = None
            if outcome.status != 200:
                raise OldServerError("cluster write failed: %d %s" % (outcome.status, outcome.message))
            self.copies_done += 1
            winner = outcome.record
            log.info("fallback copy of %s@%d into the cluster: %s (%.2fs)", name, version,
                     "stored" if winner.version == version and not winner.deleted
                     else "a newer record wins (version %d%s)" % (winner.version,
                                                                  ", deleted" if winner.deleted else ""),
                     time.monotonic() - started)
            return True
        except Exception as exc:  # noqa: BLE001 - best effort: a later read or the import copies it
            self.copies_failed += 1
            log.warning("fallback copy of %s failed: %s", name, str(exc) or type(exc).__name__)
            return False
        finally:
            if fanout is not None:
                fanout.abort()
            if resp is not None:
                resp.close()
            if scheduled:
                self._copying.discard(name)
