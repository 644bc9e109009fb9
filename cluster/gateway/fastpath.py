"""The gateway's fast path: a small GET/HEAD answered outside Tornado's handler cycle.

The front (:class:`filetracker.server.front.FastFront`) takes plain GET/HEAD
requests of ``/files/<name>``; :class:`GatewayReads` answers them with the
usual :func:`~cluster.gateway.reads.direct_read`.  When that brings the
winning record with the whole body (or, for HEAD, just the record), the
answer goes out in one ``write_headers`` call.  Every read outcome needing
more work -- a miss, a tombstone, a body larger than the first piece, a
replica down or disagreeing, no ring yet, a name moved by a recent ring change -- hands the request to
:class:`~cluster.gateway.handlers.FilesHandler` with the read already made
(it takes it with :func:`~filetracker.server.front.take_prefetched`), so no
node is asked twice.

Why: a small GET through the gateway is bound by the gateway's CPU, about
half of which went to Tornado's routing and handler life cycle; without it
the gateway spends 0.18 instead of 0.29 ms of CPU per GET (bench/README.md).
``GatewayConfig.fast_reads=False`` (``--no-fast-reads``) turns this off.
"""

import logging

from cluster.gateway.reads import direct_read
from filetracker.server.front import FastFront

log = logging.getLogger(__name__)

#: the prefetched value of a request whose direct read was tried and gave nothing usable
#: (fewer than R owners live, or one answered with an error): the handler goes straight on
#: to the quorum read instead of asking the same nodes again
DIRECT_FAILED = "direct read failed"


class GatewayReads:
    """The answerer of the gateway's front (``answerer(exchange)``, see FastFront)."""

    def __init__(self, services):
        self.services = services

    def __call__(self, exchange):
        self.services.spawn(self._answer(exchange))

    async def _answer(self, exchange):
        try:
            services = self.services
            if services.view.ring is None:  # the handler waits for one (or answers 503)
                exchange.hand_over()
                return
            try:
                direct = await direct_read(services, exchange.name, exchange.with_body)
            except Exception:
                log.exception("fast read of %s failed; the full path answers", exchange.name)
                exchange.hand_over()
                return
            if direct is None:
                exchange.hand_over(DIRECT_FAILED)
                return
            winner = direct.read.winner
            if winner is None or winner.deleted or services.view.transition_owners(exchange.name) or (exchange.with_body and (
                    direct.first is None or winner.size > services.config.range_size)):
                exchange.hand_over(direct)
                return
            exchange.send_whole(winner.version, winner.size, direct.first)
        except Exception:  # a bug: the client gets a closed connection, not a hang
            exchange.fail()


def serve_front(app, config):
    """What the gateway's HTTP server should call: the fast front around ``app``, or ``app``
    itself when ``config.fast_reads`` is off."""
    if not config.fast_reads:
        return app
    return FastFront(app, GatewayReads(app.services))
