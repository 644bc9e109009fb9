"""``GET /_cluster/ring`` on the gateway: the ring it routes by.

Lets operators and ``filetracker-admin --cluster <gateway>`` find the nodes
through a gateway.  Same msgpack format as the nodes' endpoint; the cluster
secret is required when one is configured.
"""

import msgpack

from cluster.gateway.view import NoRing
from cluster.secret import SECRET_HEADER, secret_ok
from filetracker.server.base import BaseHandler, HTTPFail


class RingHandler(BaseHandler):
    def initialize(self, services):
        self.services = services

    async def get(self):
        if not secret_ok(self.services.config.cluster_secret, self.request.headers.get(SECRET_HEADER)):
            raise HTTPFail(403, "the cluster secret is required")
        await self.services.view.refresh()
        try:
            ring = await self.services.view.get_ring()
        except NoRing as e:
            raise HTTPFail(503, str(e))
        self.set_header("Content-Type", "application/msgpack")
        self.set_header("X-Ring-Epoch", str(ring.epoch))
        self.finish(msgpack.packb(ring.to_dict(), use_bin_type=True))
