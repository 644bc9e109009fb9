"""The gateway's per-node batching of lookups and small reads (cluster/gateway/lookups.py) against a
real node: one ``POST /_cluster/fetch`` carries both kinds, and a node without that endpoint (an
older version) is asked through ``/_cluster/lookup`` and ``/_cluster/read`` with the same answers."""

import asyncio
import os

from cluster.gateway.config import GatewayConfig
from cluster.gateway.lookups import FetchBatcher, LookupBatcher, ReadBatcher
from cluster.gateway.nodes import NodeClient, NodeReply

V = 1_700_000_000
NAMES = ["/fb/small", "/fb/big", "/fb/gone", "/fb/never"] + ["/fb/n%d" % i for i in range(20)]


class _Quiet:
    def node_failed(self, url):
        pass

    def epoch_seen(self, epoch, url):
        pass


class WithoutFetch:
    """A node client for which the node has no ``/_cluster/fetch`` (its request gets the real node's
    404 for an unknown path); counts the requests by path."""

    def __init__(self, client):
        self._client = client
        self.paths = []

    def __getattr__(self, attr):
        return getattr(self._client, attr)

    async def request(self, url, method, path, *args, **kwargs):
        self.paths.append(path)
        if path == "/_cluster/fetch":
            path = "/_cluster/no-such-endpoint"
        return await self._client.request(url, method, path, *args, **kwargs)


class Counting(WithoutFetch):
    async def request(self, url, method, path, *args, **kwargs):
        self.paths.append(path)
        return await self._client.request(url, method, path, *args, **kwargs)


def _answers(client_wrapper, url, secret):
    """Every name looked up and read at once through a FetchBatcher; ``(answers, wrapper)``."""

    async def run():
        client = client_wrapper(NodeClient(GatewayConfig(nodes=(url,), cluster_secret=secret), _Quiet()))
        fetches = FetchBatcher(LookupBatcher(client), ReadBatcher(client, 1 << 20, 10.0))
        try:
            got = await asyncio.gather(*[fetches.lookup(url, n) for n in NAMES],
                                       *[fetches.read(url, n) for n in NAMES])
        finally:
            client.close()
        # what a reader uses: status, record, body
        return [(reply.code, record, reply.body) for reply, record in got], client

    return asyncio.run(run())


def test_lookups_and_reads_share_requests_and_old_nodes_answer_the_same(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1)
    url = c.urls[0]
    big = os.urandom(200 * 1024)  # above the batch read's body limit: record only
    for name, data in [("/fb/small", b"tiny"), ("/fb/big", big), ("/fb/gone", b"x")] + \
            [("/fb/n%d" % i, b"%d" % i) for i in range(20)]:
        assert c.put(0, name, data, V).ok
    assert c.delete(0, "/fb/gone", V + 1).ok

    new, counted = _answers(Counting, url, c.secret)
    old, fallback = _answers(WithoutFetch, url, c.secret)
    assert new == old
    n = len(NAMES)
    lookups, reads = new[:n], new[n:]
    assert [(code, r and (r.version, r.deleted)) for code, r, _ in lookups[:4]] == \
        [(200, (V, False)), (200, (V, False)), (200, (V + 1, True)), (200, None)]
    assert [code for code, _, _ in reads[:4]] == [200, 200, 404, 404]
    assert reads[0][2] == b"tiny" and reads[1][2] == b"" and reads[1][1].size == len(big)
    assert [body for _, _, body in reads[4:]] == [b"%d" % i for i in range(20)]
    # batched: both kinds of all 48 questions in a few requests, only to /_cluster/fetch
    assert set(counted.paths) == {"/_cluster/fetch"} and len(counted.paths) <= 3, counted.paths
    # the old node: one failed fetch, then the two older batch endpoints
    assert fallback.paths[0] == "/_cluster/fetch" and fallback.paths.count("/_cluster/fetch") == 1
    assert set(fallback.paths[1:]) == {"/_cluster/lookup", "/_cluster/read"}, fallback.paths


class Silent:
    """A node that takes a request and never answers: each request ends, after a while, as the
    node client ends a timed-out exchange (code None); counts them."""

    def __init__(self):
        self.requests = 0
        self.in_flight = asyncio.Event()

    async def request(self, url, method, path, *args, **kwargs):
        self.requests += 1
        self.in_flight.set()
        await asyncio.sleep(0.2)
        return NodeReply(url, None, {}, b"", error="timed out")


def test_what_queued_behind_a_timed_out_batch_fails_with_it():
    """Lookups that queued while a batch to a silent node was in flight were sent to it as a new
    batch once the first timed out, costing each GET a second timeout (found by a network-fault
    exploration: GETs took 10 s with --timeout 5).  They now fail with the batch, at once."""

    async def run():
        client = Silent()
        fetches = FetchBatcher(LookupBatcher(client), ReadBatcher(client, 1 << 20, 10.0))
        first = fetches.lookup("http://n1", "/a")
        await client.in_flight.wait()
        queued = [fetches.lookup("http://n1", "/b"), fetches.read("http://n1", "/c")]
        got = await asyncio.gather(first, *queued)
        return [reply.code for reply, _ in got], client.requests

    codes, requests_sent = asyncio.run(run())
    assert codes == [None, None, None] and requests_sent == 1
