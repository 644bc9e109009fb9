"""Which nodes answer reads much slower than the others, so reads ask them last.

A gateway read asks R of a name's N owners (``reads.direct_read``).  Asking
always the first R live ones made one slow-but-alive node (a bad link, a
failing disk, a loaded machine) the pace of every read it was among: in a
network-fault run, one node at 300-800 ms cut the gateway's read throughput
about 20x, although two fast replicas of every file were there.

So the gateway times each node's answers to its fetch batches (record
lookups and small reads, ``cluster/gateway/lookups.py``): the time to the
answer's first byte, so the transfer of the bodies in it is left out, though
the node's reading of them is not.  :class:`ReplicaLatency` (pure
bookkeeping, no I/O) judges every answer against the *yardstick*, the median
of the other nodes' weighted means (nodes judged slow and nodes without a
recent answer left out):

* *late*: above both :data:`SLOW_FLOOR` and :data:`SLOW_FACTOR` times the
  yardstick; :data:`RUN` late answers in a row make the node *slow*;
* *prompt*: under the floor or :data:`CLEAR_FACTOR` times the yardstick;
  :data:`RUN` prompt answers in a row, and at least its hold time spent
  slow, make it fast again.  The hold starts at :data:`HOLD_SECONDS` and
  doubles (up to :data:`MAX_HOLD_SECONDS`) for a node judged slow again
  within :data:`RELAPSE_SECONDS` of its return: a node slow only for some
  requests (bodies on a failing disk) is not tried again every few seconds.

Without a yardstick (no other node answered lately) an answer is prompt
under the floor and otherwise only moves the node's mean, so a lone node is
never slow and a slow one stays slow through a quiet spell.  Runs do not
stretch across a silence: an answer :data:`STALE_SECONDS` after the node's
previous one starts its runs afresh (the batches between got no answer:
timeouts, the node down).  A flagged node answering between 2x and 4x the
yardstick stays flagged (the band between the rules keeps a node at the
edge from flapping); it is read only when needed until it answers promptly.

Reads ask slow owners last (:meth:`ReplicaLatency.fast_first`): with R=2 of 3
a single slow owner is not asked.  Nothing else changes: writes still go to
every owner, and a slow owner is asked whenever too few others are live.  A
node read from no more gets no new answers to judge, so while a node is slow
:func:`probe_forever` sends it a one-name lookup every :data:`PROBE_SECONDS`;
it also probes a live member that has not answered for half of
:data:`STALE_SECONDS` (with R=1, or reads of a few names, the other owners are
not asked), so that the node serving has a yardstick.
Not covered: a node slow only in streaming large bodies (those are not
batched, so not timed), and R = N (every owner is needed).
"""

import asyncio
import logging
import statistics
import time

log = logging.getLogger(__name__)

#: weight of the newest answer in a node's mean (the yardstick, /status and /metrics)
ALPHA = 0.3
#: answers in a row that make a node slow (late ones), or fast again (prompt ones)
RUN = 3
#: seconds: an answer faster than this is never late (loopback jitter, a busy moment)
SLOW_FLOOR = 0.05
#: an answer is late above this many times the yardstick (and the floor)
SLOW_FACTOR = 4.0
#: an answer is prompt under this many times the yardstick (or the floor)
CLEAR_FACTOR = 2.0
#: seconds a node stays slow at least, the first time
HOLD_SECONDS = 2.0
#: the longest hold, however often a node relapses
MAX_HOLD_SECONDS = 60.0
#: a node judged slow again within this many seconds of its return holds twice as long
RELAPSE_SECONDS = 30.0
#: seconds after which a node's mean no longer serves as a yardstick (no answers lately)
STALE_SECONDS = 30.0
#: seconds between two probes of each slow node
PROBE_SECONDS = 1.0
#: the name a probe looks up (any valid name; its record does not matter, the time does)
PROBE_NAME = "/.filetracker-latency-probe"


class _Node:
    __slots__ = ("mean", "at", "late", "prompt", "slow_since", "hold", "cleared_at")

    def __init__(self):
        self.mean = None       # weighted mean of its answers' times (None before the first)
        self.at = 0.0          # when its last answer came
        self.late = 0          # late answers in a row
        self.prompt = 0        # prompt answers in a row
        self.slow_since = None
        self.hold = HOLD_SECONDS
        self.cleared_at = None


class ReplicaLatency:
    """Answer times per node URL, and the set of slow nodes they make.

    :meth:`observe` takes one answer's time; :attr:`slow` is a frozenset,
    replaced (never mutated) when it changes, so readers may keep it.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._nodes = {}   # url -> _Node
        self.slow = frozenset()

    def observe(self, url, seconds):
        """Judge one answer of ``url`` that took ``seconds`` to its first byte."""
        node = self._nodes.get(url)
        if node is None:
            node = self._nodes[url] = _Node()
        now = self._clock()
        if node.mean is not None and now - node.at >= STALE_SECONDS:
            node.late = node.prompt = 0  # a silence between: not "in a row"
        bar = self.yardstick(url)
        node.mean = seconds if node.mean is None else ALPHA * seconds + (1 - ALPHA) * node.mean
        node.at = now
        if bar is None and seconds > SLOW_FLOOR:  # nothing to judge it by: only the mean moves
            return
        late = bar is not None and seconds > max(SLOW_FLOOR, SLOW_FACTOR * bar)
        prompt = seconds <= SLOW_FLOOR or seconds <= CLEAR_FACTOR * bar
        node.late = node.late + 1 if late else 0
        node.prompt = node.prompt + 1 if prompt else 0
        if url not in self.slow and node.late >= RUN:
            relapse = node.cleared_at is not None and now - node.cleared_at < RELAPSE_SECONDS
            node.hold = min(MAX_HOLD_SECONDS, node.hold * 2) if relapse else HOLD_SECONDS
            node.slow_since = now
            self.slow = self.slow | {url}
            log.warning("node %s is slow (%d answers in a row over %.0f ms, the others' median %.0f ms): "
                        "reads ask it last for at least %.0f s", url, node.late,
                        max(SLOW_FLOOR, SLOW_FACTOR * bar) * 1000, bar * 1000, node.hold)
        elif url in self.slow and node.prompt >= RUN and now - node.slow_since >= node.hold:
            node.cleared_at = now
            node.slow_since = None
            self.slow = self.slow - {url}
            log.info("node %s is no longer slow (%.0f ms): reads ask it again", url, seconds * 1000)

    def yardstick(self, url):
        """The median mean of the nodes other than ``url`` that answered lately and are not
        slow, or None when there is none."""
        now = self._clock()
        means = [n.mean for u, n in self._nodes.items()
                 if u != url and u not in self.slow and n.mean is not None and now - n.at < STALE_SECONDS]
        return statistics.median(means) if means else None

    def quiet(self, urls):
        """Those of ``urls`` with no answer for half of :data:`STALE_SECONDS` (or never):
        soon no yardstick for the others."""
        now = self._clock()
        limit = STALE_SECONDS / 2
        return [u for u in urls if u not in self._nodes or now - self._nodes[u].at >= limit]

    def forget(self, keep):
        """Drop all that is known of nodes not in ``keep`` (URLs: the ring's members)."""
        keep = set(keep)
        for url in [u for u in self._nodes if u not in keep]:
            del self._nodes[url]
        if not self.slow <= keep:
            self.slow = frozenset(self.slow & keep)

    def mean(self, url):
        """The node's weighted mean answer time in seconds, or None before its first."""
        node = self._nodes.get(url)
        return None if node is None else node.mean

    def fast_first(self, items, key=None):
        """``items`` with the slow nodes moved to the end, order otherwise kept;
        ``items`` itself when none is slow.

        ``key(item)`` gives an item's node URL; by default ``item.url``."""
        slow = self.slow
        if not slow:
            return items
        url = key or _url
        return [i for i in items if url(i) not in slow] + [i for i in items if url(i) in slow]

    def snapshot(self):
        """``{url: {"ms": mean in ms, "slow": bool}}``, for the status document."""
        return {url: {"ms": round(n.mean * 1000, 2), "slow": url in self.slow}
                for url, n in sorted(self._nodes.items()) if n.mean is not None}


def _url(node):
    return node.url


async def probe_forever(latency, lookup, live_members, interval=PROBE_SECONDS):
    """Every ``interval`` seconds, send a one-name lookup to each live node that is slow,
    and to each that has been quiet (:meth:`ReplicaLatency.quiet`).

    ``lookup(url, name)`` is the gateway's batched lookup, whose answers are
    timed like every batch's; ``live_members()`` the URLs of the ring members
    not marked down (a node marked down is the liveness probe's, and a probe
    to it would only wait for the timeout).  A round waits at most ``interval``
    for its probes (one hung node does not hold the next round back).  Runs
    until cancelled.
    """
    while True:
        await asyncio.sleep(interval)
        live = list(live_members())
        targets = sorted(latency.slow.intersection(live).union(latency.quiet(live)))
        if targets:
            probes = [asyncio.ensure_future(lookup(url, PROBE_NAME)) for url in targets]
            done, pending = await asyncio.wait(probes, timeout=interval)
            for probe in done:
                _ignore_outcome(probe)
            for probe in pending:  # it ends with its batch (the node's timeout); only its outcome is dropped
                probe.add_done_callback(_ignore_outcome)


def _ignore_outcome(future):
    if not future.cancelled():
        future.exception()
