"""The single-node server: configuration, ``make_app(config)``, ``make_server``."""

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import tornado.httpserver
import tornado.web

from filetracker.auth import TokenFile
from filetracker.server import observe
from filetracker.server.base import ACTIVITY_SETTING, Activity, NotFoundHandler
from filetracker.server.fallback import ServerFallback
from filetracker.server.front import FastFront
from filetracker.server.guard import Limits, guard_settings
from filetracker.server.handlers import CachedReads, FilesContext, public_routes
from filetracker.server.offload import DiskExecutor
from filetracker.storage import ObjectStore
from filetracker.storage.readcache import CachingStore, ReadCache

log = logging.getLogger(__name__)

GiB = 1 << 30
#: Largest request body held in memory whole: the nodes' internal batches and rings
#: (``BaseHandler.max_buffered_body`` of their handlers), and any handler that is no BaseHandler.
MAX_BUFFERED_BODY = 64 << 20


@dataclass
class ServerConfig:
    """Options of ``filetracker-server`` (all but ``dir`` have defaults)."""

    dir: str
    host: str = "127.0.0.1"
    port: int = 9999
    max_body_size: int = 16 * GiB
    #: Our limit on the request's header lines: 431 above it.
    max_header_size: int = 64 * 1024
    #: Seconds an idle keep-alive connection is kept open.
    idle_connection_timeout: float = 300.0
    #: Seconds allowed to receive one request body (a slow 16 GiB upload still fits).
    body_timeout: float = 3600.0
    allow_writes: bool = True
    fallback_url: str | None = None
    #: with fallback_url: copy files read through to the old server into this store
    fallback_copy: bool = True
    #: Threads doing disk work (reads, writes, fsync, SQLite).
    threads: int = 16
    chunk_size: int = 256 * 1024
    #: Clear tmp/ when the store opens (False in forked workers: the parent did it).
    clear_tmp: bool = True
    #: Token file (filetracker.auth format): access control on when set.
    auth_file: str | None = None
    #: Seconds a request body may stall (no bytes) before 408 + close.
    body_idle_timeout: float = 120.0
    #: Seconds a response may stall (client not reading) before the connection is closed.
    send_timeout: float = 300.0
    #: Longest request target (path + query) in bytes: 414 above it.
    max_uri_bytes: int = 16 * 1024
    #: Uploads received at once per process (None: unbounded): 503 + Retry-After above it.
    max_uploads: int | None = None
    #: Memory for recently read records and small bodies answered without a disk hop
    #: (filetracker/storage/readcache.py); 0: off.  Only for one process (main.py turns it
    #: off with --workers N > 1: another process's writes would not invalidate it).
    read_cache_bytes: int = 16 * 1024 * 1024
    #: answer GET/HEAD of cached files outside Tornado's handler cycle (filetracker/server/front.py)
    fast_reads: bool = True


def guard_of(config):
    """Application settings installing the access control and limits of ``config``."""
    auth = TokenFile(config.auth_file) if config.auth_file else None
    return guard_settings(auth, Limits(
        max_body_size=config.max_body_size, max_uri_bytes=config.max_uri_bytes,
        body_idle_timeout=config.body_idle_timeout or None, send_timeout=config.send_timeout or None,
        max_uploads=config.max_uploads, max_header_bytes=config.max_header_size))


def make_app(config, store=None, executor=None):
    """Build the Tornado application; ``app.ctx`` is its :class:`FilesContext`.

    ``store`` and ``executor`` default to a new :class:`ObjectStore` on
    ``config.dir`` and a thread pool of ``config.threads``.
    """
    read_cache = None
    if store is None:
        os.makedirs(config.dir, exist_ok=True)
        store = ObjectStore(config.dir, clear_tmp=config.clear_tmp)
        if config.read_cache_bytes > 0:
            read_cache = ReadCache(config.read_cache_bytes)
            store = CachingStore(store, read_cache)  # every write invalidates before it returns
    if executor is None:
        executor = DiskExecutor(max_workers=config.threads, thread_name_prefix="ft-disk")
    ctx = FilesContext(store=store, executor=executor, allow_writes=config.allow_writes,
                       chunk_size=config.chunk_size,
                       max_header_bytes=config.max_header_size, read_cache=read_cache)
    if config.fallback_url:
        # a read-only server never changes its store, not even by the background copy
        ctx.fallback = ServerFallback(config.fallback_url, store, ctx.run,
                                      copy=config.fallback_copy and config.allow_writes)
    app = tornado.web.Application(
        public_routes(ctx),
        default_handler_class=NotFoundHandler,
        default_handler_args={"max_header_bytes": config.max_header_size},
        compress_response=False,
        **guard_of(config),
        **{ACTIVITY_SETTING: Activity()},   # what a stop lets end (HTTPServer.drain)
    )
    app.ctx = ctx
    # GET /metrics, request metrics and access lines (filetracker.server.observe)
    observe.instrument(app, observe.server_registry(store), executor=executor)
    return app


def serve_front(app, config):
    """What the server's HTTP server should be given: the fast front for small reads
    (:mod:`filetracker.server.front`, answering from the read cache) around ``app``, or ``app``
    itself when there is no read cache (``--workers`` > 1) or ``config.fast_reads`` is off."""
    cache = app.ctx.read_cache
    if cache is None or not config.fast_reads:
        return app
    return FastFront(app, CachedReads(cache))


#: bytes Tornado reads from a socket at once and hands to a streamed upload at once
#: (its default is 64 KiB): a 256 MiB upload is then 1,024 pieces instead of 4,096 for
#: every process it passes (gateway, each node; with early writeback, 11-15 % less CPU
#: per 256 MiB PUT there, bench/README.md); small requests pay the zeroed read buffer
#: of this size per socket read (3.7 us, against 1.5 us for 64 KiB; 18 us for 1 MiB,
#: which is why it is not larger)
BODY_CHUNK = 256 * 1024


#: seconds :meth:`HTTPServer.drain` waits for the connections it closes to end
CLOSE_TIMEOUT = 5.0


class HTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer with ``TCP_NODELAY`` on for the whole connection.

    Tornado turns Nagle off before the end of every answer and on again after
    it: two ``setsockopt`` calls per request, about 3 % of a small GET's CPU in
    a profile of the gateway.  Our answers are written whole or in large
    chunks, so Nagle never helps them: it is turned off once per connection.
    """

    def handle_stream(self, stream, address):
        stream.set_nodelay(True)
        stream.set_nodelay = _nodelay_stays_on
        super().handle_stream(stream, address)

    async def drain(self, activity, timeout):
        """After :meth:`stop`: wait up to ``timeout`` seconds for the requests in progress
        (``activity``, a :class:`~filetracker.server.base.Activity`) to end and for their
        answers to leave the sockets, then close every connection.  Returns how many
        requests were still in progress then (0: all ended)."""
        deadline = time.monotonic() + timeout
        ended = await activity.wait_idle(timeout)
        # a finished answer may still sit in its connection's buffer (Tornado's close drops it);
        # _connections: the server's open connections (Tornado keeps them there to close them)
        while ended and any(c.stream.writing() for c in self._connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = activity.count
        try:   # bounded: a connection's close waits for its request loop to end
            await asyncio.wait_for(self.close_all_connections(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("connections still open %.0f s after they were closed; exiting anyway", CLOSE_TIMEOUT)
        # the uploads those closes dropped hand their clean-up to the disk threads on the next
        # turns of the loop: let them, before the caller shuts those threads down
        await asyncio.sleep(0.05)
        return left


def _nodelay_stays_on(value):
    """``IOStream.set_nodelay`` of a connection accepted by :class:`HTTPServer`."""


def make_server(app, config):
    """An HTTPServer with the limits of ``config`` (not yet listening).

    Tornado's own header limit is set well above ``config.max_header_size`` so
    that an oversized header gets our 431 answer; only absurd ones (16x the
    limit) make Tornado drop the connection.
    """
    return HTTPServer(
        app,
        xheaders=False,
        # for a handler that is no BaseHandler (none of ours): every BaseHandler streams its body,
        # and the guard lifts this limit and applies its own (413 with a message)
        max_body_size=min(config.max_body_size, MAX_BUFFERED_BODY),
        max_header_size=max(16 * config.max_header_size, 1 << 20),
        idle_connection_timeout=config.idle_connection_timeout,
        body_timeout=config.body_timeout,
        decompress_request=False,
        chunk_size=BODY_CHUNK,
    )
