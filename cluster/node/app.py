"""``make_app(config)``: the Tornado application of one storage node.

Routes: the public protocol over the node's own store (the handlers of
:mod:`filetracker.server`, writes only with ``allow_public_writes``) and the
internal API (:mod:`cluster.node.internal`).  Every answer carries
``X-Ring-Epoch``.  ``app.node`` is the :class:`~cluster.node.state.NodeState`;
:func:`start_background` / :func:`shutdown` start and stop its tasks.
"""


import tornado.web

from cluster.node.fastpath import (  # one-hop small GET/PUT (performance)
    fastpath_routes,
    public_get_cached,
    public_head_cached,
)
from cluster.node.fetchfront import NodeFront
from cluster.node.internal import internal_routes
from cluster.node.metrics import node_registry
from cluster.node.protect import protect_store
from cluster.node.state import NodeState
from cluster.node.tasks import TaskRunner, make_tasks
from cluster.node.writebatch import writebatch_routes  # batched small PUTs of gateways
from cluster.peers import EPOCH_HEADER
from filetracker.server import (
    FileHandler,
    FilesContext,
    HTTPFail,
    NotFoundHandler,
    name_from_path,
    observe,
    public_routes,
)
from filetracker.server.app import BODY_CHUNK, MAX_BUFFERED_BODY, HTTPServer, guard_of
from filetracker.server.base import ACTIVITY_SETTING, NO_PUBLIC_WRITES, Activity
from filetracker.server.offload import DiskExecutor


class NodePublicFileHandler(FileHandler):
    """The public ``/files/`` handler with a node-specific refusal of writes, and small GETs
    and HEADs answered from the node's read cache (:mod:`cluster.node.fastpath`)."""

    async def get(self, path_arg):
        if self.request.method == "GET" and "Range" not in self.request.headers:
            name, _ = name_from_path(path_arg)
            if await public_get_cached(self, self.application.node, name):
                return
        await super().get(path_arg)

    async def head(self, path_arg):
        name, _ = name_from_path(path_arg)
        if not public_head_cached(self, self.application.node, name):
            await super().get(path_arg)

    def require_writes(self):
        if not self.ctx.allow_writes:
            raise HTTPFail(403, NO_PUBLIC_WRITES + " on this storage node: write through the "
                                "gateway (or start the node with --allow-public-writes)")


def _epoch_transform(node):
    class AddRingEpoch(tornado.web.OutputTransform):
        """Adds ``X-Ring-Epoch`` to every answer, errors included."""

        def transform_first_chunk(self, status_code, headers, chunk, finishing):
            headers[EPOCH_HEADER] = str(node.ring.epoch)
            return status_code, headers, chunk

    return AddRingEpoch


def _public(ctx):
    routes = []
    for spec in public_routes(ctx):
        if spec.handler_class is FileHandler:
            spec = tornado.web.url(spec.regex.pattern, NodePublicFileHandler, spec.kwargs)
        routes.append(spec)
    return routes


def make_app(config):
    """Build the node's application (opens its store and ring; tasks not started)."""
    node = NodeState(config)
    protect_store(node)  # reserved space + bitrot checks (cluster/node/protect.py); before ctx takes node.store
    executor = DiskExecutor(max_workers=config.threads, thread_name_prefix="node-disk")
    ctx = FilesContext(store=node.store, executor=executor, allow_writes=config.allow_public_writes,
                       chunk_size=config.chunk_size, max_header_bytes=config.max_header_size)
    node.tasks, node.peer_client = make_tasks(node)
    app = tornado.web.Application(
        fastpath_routes(node, ctx) + writebatch_routes(node, ctx) + internal_routes(node, ctx) + _public(ctx),
        default_handler_class=NotFoundHandler,
        default_handler_args={"max_header_bytes": config.max_header_size},
        transforms=[_epoch_transform(node)],
        **{ACTIVITY_SETTING: Activity()},   # what a stop lets end (HTTPServer.drain)
        **guard_of(config),  # --auth-file and request limits (filetracker/server/guard.py)
    )
    app.node = node
    app.ctx = ctx
    app.executor = executor
    app.runner = None
    # GET /metrics, request metrics and access lines (filetracker.server.observe)
    observe.instrument(app, node_registry(node), executor=executor)
    return app


def make_server(app, config):
    """An HTTPServer with the node's limits and its front for ``POST /_cluster/fetch``
    (``cluster/node/fetchfront.py``; unless ``config.fast_fetch`` is off), not yet listening."""
    return HTTPServer(
        NodeFront(app, app.node, app.ctx) if config.fast_fetch else app,
        max_body_size=min(config.max_body_size, MAX_BUFFERED_BODY),  # streamed uploads: the guard's limit
        max_header_size=max(16 * config.max_header_size, 1 << 20),
        idle_connection_timeout=config.idle_connection_timeout, body_timeout=config.body_timeout,
        decompress_request=False, chunk_size=BODY_CHUNK)


def start_background(app):
    """Start the loops of anti-entropy, handoff and reclaim (unless ``config.background`` is off)."""
    if app.node.config.background and app.runner is None:
        app.runner = TaskRunner(list(app.node.tasks.values()))
        app.runner.start()


def shutdown(app):
    """Stop the tasks, the executor and the store (after the server stopped listening)."""
    if app.runner is not None:
        app.runner.stop()
    for task in app.node.tasks.values():
        task.close()
    app.executor.shutdown(wait=True, cancel_futures=True)
    app.node.peer_client.close()
    app.node.close()
