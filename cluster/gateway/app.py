"""``make_app(config)``: the gateway's Tornado application and its shared services."""

import asyncio
import logging

from tornado import web
from tornado.tcpclient import TCPClient

from cluster.gateway.fallback import Fallback
from cluster.gateway.handlers import FilesHandler, ListHandler
from cluster.gateway.lookups import FetchBatcher, LookupBatcher, ReadBatcher
from cluster.gateway.metrics import gateway_registry
from cluster.gateway.nodes import NodeClient
from cluster.gateway.reads import SLOWEST_PIECE_BYTES_PER_S
from cluster.gateway.ring_handler import RingHandler
from cluster.gateway.smallput import StoreBatcher
from cluster.gateway.status_page import status_routes
from cluster.gateway.view import ClusterView
from filetracker.server import observe
from filetracker.server.app import guard_of
from filetracker.server.base import ACTIVITY_SETTING, Activity, NotFoundHandler
from filetracker.server.handlers import VersionHandler  # the same answer as the single server

log = logging.getLogger(__name__)


class Services:
    """What every handler shares: config, cluster view, node client, background tasks.

    Background work (slow replicas finishing, read repair) is kept here so its
    tasks are referenced until they end and their errors are logged.
    """

    def __init__(self, config):
        self.config = config
        self.view = ClusterView(config)
        self.client = NodeClient(config, self.view)
        # record lookups and small reads of concurrent GETs, batched per node (one request of both kinds)
        latency = self.view.latency if config.avoid_slow else None  # None: nothing timed, none slow
        self.fetches = FetchBatcher(
            LookupBatcher(self.client, latency),
            ReadBatcher(self.client, config.range_size,
                        config.timeout + config.range_size / SLOWEST_PIECE_BYTES_PER_S, latency),
            latency)
        # small PUTs, batched per node (one POST /_cluster/store for every file waiting)
        self.stores = StoreBatcher(self.client, config.timeout)
        self.view.attach(self.client)
        self.tcp = TCPClient()
        # migration mode (--fallback-url): read-through to the old server
        self.fallback = Fallback(self, config.fallback_url, copy=config.fallback_copy) \
            if config.fallback_url else None
        self._background = set()
        self.repairs = set()   # (node url, record) of read repairs under way (cluster/gateway/reads.py)

    def keep(self, task):
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def spawn(self, coro):
        return self.keep(asyncio.ensure_future(coro))

    def spawn_request(self, *args, **kwargs):
        """Start a node request now; await the returned task later (scatter)."""
        return asyncio.ensure_future(self.client.request(*args, **kwargs))

    def _done(self, task):
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def close(self):
        self.view.close()
        for task in list(self._background):
            task.cancel()
        self.client.close()


def make_app(config):
    """The gateway application; ``app.services`` holds its shared state."""
    services = Services(config)
    deps = {"services": services}
    app = web.Application([
        (r"/version/?", VersionHandler, deps),
        (r"/files/(.*)", FilesHandler, deps),
        (r"/list", ListHandler, deps),
        (r"/list/(.*)", ListHandler, deps),
        (r"/_cluster/ring", RingHandler, deps),
    ] + status_routes(services), default_handler_class=NotFoundHandler, compress_response=False,
       **{ACTIVITY_SETTING: Activity()},   # what a stop lets end (HTTPServer.drain)
       **guard_of(config))  # --auth-file and request limits (filetracker/server/guard.py)
    app.services = services
    # GET /metrics, request metrics and access lines (filetracker.server.observe)
    observe.instrument(app, gateway_registry(services))
    return app
