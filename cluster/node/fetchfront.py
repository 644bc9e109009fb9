"""``POST /_cluster/fetch`` answered outside Tornado's request-handler cycle (the node's front).

A gateway's small GETs reach the owners as batched ``POST /_cluster/fetch``
requests (``cluster/gateway/lookups.py``), and the read cache answers most of
their names on the event loop.  What such a request then costs the node is
mostly Tornado's request-handler cycle (routing, handler object, ``prepare``,
header dictionaries, output transforms, ``flush``), not the names in it.

:class:`NodeFront` (a :class:`~filetracker.server.front.FastFront`) takes a
plain ``POST /_cluster/fetch`` (:meth:`~filetracker.server.front.FastFront.plain`): no
query, ``Content-Length`` of at most :data:`FETCH_BODY_MAX`, the cluster secret right.  It answers with what
:class:`~cluster.node.fastpath.FetchHandler` answers (the same rows by the same
functions, ``Content-Type``, ``X-Ring-Epoch``).  Everything else -- another
path, a wrong secret, a body that is not a valid request, a store failure
while reading -- goes to the application, which answers it with its own
status and message.  With access control on (``--auth-file``) the front takes
nothing.  ``NodeConfig.fast_fetch=False`` (``--no-fast-fetch``) turns it off.
"""

import asyncio
import logging

import msgpack

from cluster.node.fastpath import fetch_names, fetch_rows
from cluster.node.internal import MSGPACK, unpack_body
from cluster.peers import EPOCH_HEADER
from cluster.secret import SECRET_HEADER, secret_ok
from filetracker.server.base import HTTPFail
from filetracker.server.front import FastFront

log = logging.getLogger(__name__)

PATH = "/_cluster/fetch"
#: largest request body the front takes (a gateway's batches are a few KiB; larger ones,
#: up to the server's limit, are the application's)
FETCH_BODY_MAX = 256 * 1024


class NodeFront(FastFront):
    """The node's server delegate: ``POST /_cluster/fetch`` here, every other request to ``app``."""

    def __init__(self, app, node, ctx):
        super().__init__(app, FetchAnswerer(node, ctx))
        self._secret = node.config.cluster_secret

    def select(self, start_line, headers):
        if start_line.path != PATH:
            return None
        if not self.plain(start_line, headers, ("POST",), FETCH_BODY_MAX):
            return None
        if not secret_ok(self._secret, headers.get(SECRET_HEADER)):
            return None  # the application answers 403 with its message
        return PATH


class FetchAnswerer:
    """``answerer(exchange)`` of :class:`NodeFront`."""

    def __init__(self, node, ctx):
        self.node = node
        self.ctx = ctx
        self._tasks = set()  # answers in progress (a task nobody references may be collected)

    def __call__(self, exchange):
        try:
            names = fetch_names(unpack_body(exchange.body))
        except HTTPFail:  # not a valid request: the application says why (400)
            exchange.hand_over()
            return
        task = asyncio.ensure_future(self._answer(exchange, *names))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, exchange, lookups, reads):
        try:
            rows = await fetch_rows(self.node, self.ctx, lookups, reads)
        except Exception:  # noqa: BLE001 - e.g. a store failure: the application answers it
            log.warning("fetch failed in the front; the handler answers it", exc_info=True)
            try:
                exchange.hand_over()
            except Exception:  # a bug: the client gets a closed connection, not a hang
                exchange.fail()
            return
        try:
            body = msgpack.packb(rows)
            exchange.send({"Content-Type": MSGPACK, "Content-Length": str(len(body)),
                           EPOCH_HEADER: str(self.node.ring.epoch)}, body)
        except Exception:  # a bug: the client gets a closed connection, not a hang
            exchange.fail()
