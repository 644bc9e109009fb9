"""Dropping a replica that lags behind the write quorum (cluster/gateway/writes.py PutFanout).

The real ``PutFanout.feed``/``finish`` delivery and ``ReplicaUpload.feed``/``offer``/``abort``/
``taking``, with the node side faked: each replica takes its queued chunks at its own pace, or
freezes (its socket full, as a stopped node or a link gone without a reset).  Timings are scaled
down (LAG_GRACE 0.3 s); the tests check which replicas stay in, not how long anything took.
"""

import asyncio

import pytest

from cluster.gateway import writes
from cluster.gateway.upload import END_OF_BODY, ReplicaUpload
from cluster.gateway.view import NodeRef

W = 2


class Observer:
    def __init__(self):
        self.failed = []

    def node_failed(self, url, reason=None):
        self.failed.append(url)


class FakeNode(ReplicaUpload):
    """A replica upload whose node takes a chunk every ``per_chunk`` s, freezing ``freeze_after``
    s after it starts (its pump then waits for a socket that never drains)."""

    def __init__(self, name, per_chunk, freeze_after=None, timeout=1.0):
        super().__init__(None, NodeRef(name, "http://%s:1" % name), None, "/f", 1,
                         {"Content-Length": "1"}, timeout, Observer())
        self.per_chunk, self.freeze_after = per_chunk, freeze_after
        self.taken = 0
        self.ended = False

    def start(self):
        loop = asyncio.get_running_loop()
        self.progressed = loop.time()
        self.task = asyncio.ensure_future(self._consume(loop, loop.time()))

    async def _consume(self, loop, began):
        while not self.failed:
            chunk = await self._queue.get()
            if self.failed:
                return
            if chunk is END_OF_BODY:
                self.ended = True
                return
            if self.freeze_after is not None and loop.time() - began > self.freeze_after:
                self._stuck_since = loop.time()
                await asyncio.sleep(3600)
            await asyncio.sleep(self.per_chunk)
            self.taken += 1
            self.progressed = loop.time()


def fanout(nodes):
    f = writes.PutFanout.__new__(writes.PutFanout)
    f.name, f.uploads, f._quorum, f._began, f._copy = "/f", nodes, W, None, None
    return f


async def upload(f, chunks=60, pace=0.005):
    for node in f.uploads:
        node.start()
    for _ in range(chunks):
        await f.feed(b"x" * 1000)
        await asyncio.sleep(pace)           # the client's pace
    await f._deliver(END_OF_BODY, asyncio.get_running_loop())


@pytest.fixture(autouse=True)
def scaled(monkeypatch):
    monkeypatch.setattr(writes, "LAG_GRACE", 0.3)
    monkeypatch.setattr(writes, "PROGRESS_WINDOW", 0.1)


def run(nodes, chunks=60):
    async def main():
        f = fanout(nodes)
        try:
            await asyncio.wait_for(upload(f, chunks), 30)
            # the replicas still in take the rest of their queue and the end
            await asyncio.wait_for(asyncio.gather(*(n.task for n in nodes if not n.failed)), 30)
        finally:
            for n in nodes:
                n.task.cancel()
        return f
    return asyncio.run(main())


def test_a_slow_replica_beyond_the_quorum_is_dropped():
    a, b, c = FakeNode("a", 0.001), FakeNode("b", 0.001), FakeNode("c", 0.1)
    run([a, b, c])
    assert (a.failed, b.failed) == (None, None) and a.ended and b.ended
    assert c.failed.startswith("fell behind the other replicas")


def test_a_replica_slower_than_the_progress_window_is_dropped():
    """The fast replicas are checked right after the delivery the slow one held back: each had
    just been given a chunk, and had last taken bytes one slow-node pace ago.  At a pace slower
    than PROGRESS_WINDOW they did not count as taking the body, so the slower a node the surer
    it was kept (and the CI run at a pace equal to the window failed by a millisecond)."""
    a, b, c = FakeNode("a", 0.001), FakeNode("b", 0.001), FakeNode("c", 0.25)
    run([a, b, c], chunks=20)
    assert (a.failed, b.failed) == (None, None) and a.ended and b.ended
    assert c.failed.startswith("fell behind the other replicas")


def test_a_slow_replica_is_kept_when_another_froze_and_it_is_needed_for_w():
    """A frozen node's queue still had room, so it counted as taking the body and the slow one
    was dropped; then the frozen one timed out too and the PUT had 1 replica of W=2 (found by a
    review).  A frozen node no longer counts: the slow one is waited for."""
    # C sets the pace (a chunk per 0.1 s), so frozen A's queue fills only slowly: when C has
    # lagged its 0.3 s, A still has room
    a, b, c = FakeNode("a", 0.001, freeze_after=0.15), FakeNode("b", 0.001), FakeNode("c", 0.1)
    run([a, b, c], chunks=20)
    assert a.failed and not a.failed.startswith("fell behind")     # the node's own timeout
    assert b.failed is None and c.failed is None and b.ended and c.ended


def test_the_end_of_the_body_is_not_waited_for_on_a_lagging_replica():
    """``finish`` queued the end on every replica with the whole --timeout to take it: a stopped
    node whose queue had just filled held the PUT that long (found by a review)."""
    a, b, c = FakeNode("a", 0.001), FakeNode("b", 0.001), FakeNode("c", 0.001, freeze_after=0.0, timeout=30)

    async def main():
        f = fanout([a, b, c])
        for n in f.uploads:
            n.start()
        for _ in range(9):                   # C's queue fills (8) and C is stopped
            await f.feed(b"x" * 1000)
            await asyncio.sleep(0.005)
        await asyncio.wait_for(f._deliver(END_OF_BODY, asyncio.get_running_loop()), 10)
        for n in f.uploads:
            n.task.cancel()

    asyncio.run(main())
    assert a.ended and b.ended and c.failed.startswith("fell behind")
