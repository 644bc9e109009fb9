"""Where data still waits to move: the partitions each node holds but does not own.

After a ring change a partition's newest records may sit only on nodes that no
longer own it until handoff has moved them (and a hinted write sits on a
handoff node until its owner is back).  The gateway's reads of such a
partition ask those nodes too (``cluster/gateway/reads.py`` ``widen_read``).
Knowing them only from the rings this gateway saw replaced had two gaps: the
widening had to end after a fixed time (``--transition-reads``), whether or not
the data had moved, and a gateway started after the change did not know the old
rings at all.

So the gateway asks every node it may need (``GET /_cluster/foreign``, every
:data:`POLL_SECONDS`) which partitions it holds but does not own under its ring.
:class:`ForeignHolders` keeps the answers (pure bookkeeping, no I/O);
:func:`poll_forever` is the loop that feeds it.

The holders are asked on top of the time-based widening, not instead of it:
an answer is up to a poll and a node's cache period old, and right after a ring
change a gateway that has not learnt the new ring yet still writes to the former
owners after they answered.  So the window covers the first moments of a change,
and the holders cover what outlasts it (a slow rebalance, hints) and gateways
that never saw the old ring.  *Settled* (every node asked answered, under the
epoch of the gateway's ring) is shown on the gateway's ``/status``.
"""

import asyncio
import logging

import msgpack

log = logging.getLogger(__name__)

#: seconds between two polls of the nodes' foreign partitions
POLL_SECONDS = 5.0
#: seconds one poll request may take
POLL_TIMEOUT = 2.0
#: seconds between two tries while the gateway has no ring yet (it is starting)
NO_RING_RETRY = 0.5


class ForeignHolders:
    """The last answer of every node polled, and the partitions -> holders map they make."""

    def __init__(self):
        self._answers = {}       # url -> (epoch, partitions) of its last answer; None: never answered
        self._by_partition = {}  # partition -> [url, ...] of nodes holding it without owning it
        self._settled_epoch = None

    def record_poll(self, epoch, answers):
        """Take the answers of one poll: ``{url: (epoch, partitions) or None}`` for every node
        asked while the gateway's ring had ``epoch``.

        A node that did not answer this time keeps its last answer (unknown counts as "still
        holds": a busy node may be the only one with the newest version); a node no longer
        asked is forgotten.
        """
        self._answers = {url: answer if answer is not None else self._answers.get(url)
                         for url, answer in answers.items()}
        by_partition = {}
        for url, answer in sorted(self._answers.items()):
            if answer is None:
                continue
            for p in answer[1]:
                by_partition.setdefault(p, []).append(url)
        self._by_partition = by_partition
        settled = bool(answers) and all(a is not None and a[0] == epoch for a in answers.values())
        self._settled_epoch = epoch if settled else None

    def settled(self, epoch):
        """Whether the last poll reached every node, all under ring ``epoch``."""
        return self._settled_epoch is not None and self._settled_epoch == epoch

    def holders(self, partition):
        """URLs of the nodes that held ``partition`` without owning it at the last poll."""
        return self._by_partition.get(partition, ())

    def any_held(self):
        return bool(self._by_partition)

    def snapshot(self):
        """For ``/status``: ``{"settled_epoch", "partitions_held": {url: count or None}}``."""
        return {"settled_epoch": self._settled_epoch,
                "partitions_held": {url: None if a is None else len(a[1]) for url, a in sorted(self._answers.items())}}


def parse_answer(body):
    """``(epoch, partitions)`` of a ``GET /_cluster/foreign`` body; ValueError when malformed."""
    doc = msgpack.unpackb(body, raw=False)
    if not isinstance(doc, dict):
        raise ValueError("not a map")
    epoch, partitions = doc.get("epoch"), doc.get("partitions")
    if not isinstance(epoch, int) or not isinstance(partitions, list) or \
            not all(isinstance(p, int) and not isinstance(p, bool) for p in partitions):
        raise ValueError("expected {epoch: int, partitions: [int]}")
    return epoch, frozenset(partitions)


async def poll_once(view, client):
    """Ask every node the view may need; record the answers in ``view.holders``."""
    if view.ring is None:
        return
    epoch = view.epoch
    urls = view.nodes_to_poll()
    replies = await asyncio.gather(*(client.request(url, "GET", "/_cluster/foreign", observe=False,
                                                    timeout=POLL_TIMEOUT) for url in urls))
    answers = {}
    for reply in replies:
        answers[reply.url] = None
        if reply.code != 200:
            continue
        try:
            answers[reply.url] = parse_answer(reply.body)
        except Exception as exc:  # noqa: BLE001 - one node's bad answer must not stop the others
            log.warning("bad answer to GET /_cluster/foreign from %s: %s", reply.url, exc)
    if view.epoch == epoch:   # a ring installed meanwhile: the next poll asks under it
        view.holders.record_poll(epoch, answers)


async def poll_forever(view, client, interval=POLL_SECONDS):
    """:func:`poll_once` every ``interval`` seconds until cancelled (every
    :data:`NO_RING_RETRY` seconds while the gateway has no ring yet)."""
    while True:
        try:
            await poll_once(view, client)
        except Exception:  # noqa: BLE001 - keep polling; logged
            log.exception("polling the nodes' foreign partitions failed")
        await asyncio.sleep(interval if view.ring is not None else min(interval, NO_RING_RETRY))
