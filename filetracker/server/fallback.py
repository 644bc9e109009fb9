"""Read-through to an old filetracker server for ``filetracker-server --fallback-url URL``.

The public GET/HEAD handler calls :meth:`ServerFallback.serve` when the store
holds *no record at all* for a name.  A tombstone is a record: a name deleted
here never falls back, the delete wins for good.  The old server's answer is
streamed through to the client (not a 307 redirect, unlike the 2.x server):
plain bytes with the old version, see
:func:`filetracker.server.oldserver.stream_to_client`.

Unless ``copy`` is off (``--fallback-no-copy``), a file served that way is
then copied into the local store *in the background* with its original
version: a second GET from the old server streamed into an upload (disk work
in the executor), committed by :meth:`ObjectStore.commit_upload`, whose merge
rule keeps a record written or deleted here meanwhile when it is newer.

Writes and deletes never reach the old server.  :meth:`ServerFallback.delete_hidden`
lets the DELETE handler delete a name only the old server holds: it writes a
tombstone here, which hides the old copy from then on (a single server never
reclaims tombstones).  Before a PUT or DELETE, a newer file the old server
holds is copied in first (:meth:`ServerFallback.copy_if_newer`), so an older
write changes nothing, as once the name is imported.

A request carrying ``X-No-Fallback: 1`` never falls back (an importer asks what
this server itself holds).
"""

import asyncio
import logging
import time

from tornado.tcpclient import TCPClient

from filetracker.records import Record
from filetracker.server import oldserver
from filetracker.server.oldserver import OldServer, OldServerError, PlainDecoder, version_of

log = logging.getLogger("filetracker.server.fallback")


#: at most this many background copies run at once per process; a read of
#: another name meanwhile is served but not copied (a later read copies it)
MAX_COPIES = 4


class ServerFallback:
    """Migration mode of one server process: the old server at ``url``.

    ``store`` is the server's :class:`~filetracker.storage.ObjectStore`,
    ``run(fn, *args)`` awaits a blocking call in the server's executor.
    """

    def __init__(self, url, store, run, copy=True, timeout=30.0):
        self.copy = copy
        self._store = store
        self._run = run
        self._tcp = TCPClient()
        self.old = OldServer(self._tcp, url, timeout)
        self.url = self.old.url  # without credentials (logs, messages)
        self._copying = set()
        self._tasks = set()
        self.copies_done = 0
        self.copies_failed = 0

    wanted = staticmethod(oldserver.wanted)

    async def serve(self, handler, name, with_body):
        """Answer ``handler``'s GET/HEAD for ``name`` (which has no record here) from the old server.

        Raises :class:`~filetracker.server.base.HTTPFail` 404 / 502 as
        :func:`~filetracker.server.oldserver.stream_to_client` does.
        """
        version = await oldserver.stream_to_client(self.old, handler, name, with_body, log)
        if version is None:
            return
        log.info("fallback %s %s@%d served from %s", "GET" if with_body else "HEAD", name, version, self.url)
        if self.copy:
            self.schedule_copy(name)

    async def delete_hidden(self, name, version):
        """DELETE of ``name`` that has no record here: when the old server holds
        it, write a tombstone at ``version`` (the old copy is hidden for good) and
        return ``(winner, applied)``; None when the old server does not hold it.
        A newer version there is copied in first, and wins over the tombstone."""
        held = await oldserver.old_version(self.old, name)
        if held is None:
            return None
        if held > version and not await self.copy_in(name):
            return Record(name, held, "", 0), False   # not copied: nothing deleted
        return await self._run(self._store.delete, name, version)

    async def copy_if_newer(self, name, version):
        """Before a write of ``name`` at ``version``: when the old server holds a newer version,
        copy it in now (see :func:`filetracker.server.oldserver.newer_version`).  False only
        when there is one and it could not be copied (:meth:`_copy` logs why)."""
        held = await oldserver.newer_version(self.old, name, version, log)
        return held is None or await self.copy_in(name)

    async def copy_in(self, name):
        """Copy ``name`` from the old server into the store now; True when done."""
        return await self._copy(name, scheduled=False)

    async def list_names(self, folder, max_version):
        """Names the old server lists under ``folder`` (see :func:`oldserver.list_names`)."""
        return await oldserver.list_names(self.old, folder, max_version)

    # ------------------------------------------------------------------ background copy

    def schedule_copy(self, name):
        """Start copying ``name`` here unless a copy of it runs already or
        :data:`MAX_COPIES` run; True when started."""
        if name in self._copying or len(self._copying) >= MAX_COPIES:
            return False
        self._copying.add(name)
        task = asyncio.get_running_loop().create_task(self._copy(name))
        self._tasks.add(task)  # keep a reference until it ends
        task.add_done_callback(self._tasks.discard)
        return True

    async def _copy(self, name, scheduled=True):
        """Copy ``name`` from the old server into the store; True when the store then holds it
        (or a newer record).  ``scheduled``: started by :meth:`schedule_copy`."""
        started = time.monotonic()
        resp = upload = None
        try:
            resp = await self.old.request("GET", name)
            if resp.code != 200:
                raise OldServerError("the old server answered %d" % resp.code)
            version = version_of(resp.headers)
            upload = await self._run(self._store.begin_upload)
            decoder = PlainDecoder(resp.headers)
            async for raw in resp.body():
                for data in decoder.feed(raw):
                    await self._run(upload.write, data)
            decoder.close()
            upload, pending = None, upload
            winner, applied = await self._run(self._store.commit_upload, pending, name, version)
            self.copies_done += 1
            log.info("fallback copy of %s@%d: %s (%.2fs)", name, version,
                     "stored" if applied else "a newer record wins (version %d%s)"
                     % (winner.version, ", deleted" if winner.deleted else ""),
                     time.monotonic() - started)
            return True
        except Exception as exc:  # noqa: BLE001 - best effort: a later read copies it
            self.copies_failed += 1
            log.warning("fallback copy of %s failed: %s", name, exc or type(exc).__name__)
            return False
        finally:
            if upload is not None:
                upload.abort()  # quick (close + unlink), and works while shutting down
            if resp is not None:
                resp.close()
            if scheduled:
                self._copying.discard(name)

    def close(self):
        """Cancel the copies still running (their uploads are aborted)."""
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._tcp.close()
