"""Which nodes answer reads much slower than the others, so reads ask them last.

A gateway read asks R of a name's N owners (``reads.direct_read``).  Asking
always the first R live ones made one slow-but-alive node (a bad link, a
failing disk, a loaded machine) the pace of every read it was among: in a
network-fault run, one node at 300-800 ms cut the gateway's read throughput
about 20x, although two fast replicas of every file were there.

So the gateway times its lookup batches per node (:class:`ReplicaLatency`:
an exponentially weighted mean of their round trips; pure bookkeeping, no
I/O) and calls a node *slow* when that mean is both above
:data:`SLOW_FLOOR` and :data:`SLOW_FACTOR` times the fastest other node's.
Reads then ask slow owners last (:meth:`ReplicaLatency.fast_first`): with
R=2 of 3 a single slow owner is not asked at all.  Nothing else changes:
writes still go to every owner, and a slow owner is asked whenever too few
others are live.

A node read from no more gets no new timings, so while a node is slow
:func:`probe_forever` sends it a one-name lookup every :data:`PROBE_SECONDS`;
once those come back fast its mean falls below the bar and reads return to
it.  Nothing is slow while nodes answer alike, so the usual read costs one
empty-set check.
"""

import asyncio
import logging
import time

log = logging.getLogger(__name__)

#: weight of the newest round trip in a node's mean
ALPHA = 0.3
#: round trips a node must have answered before it can be called slow
MIN_SAMPLES = 2
#: seconds: a mean below this is never slow (loopback jitter, a busy moment)
SLOW_FLOOR = 0.05
#: a node is slow when its mean is this many times the fastest other node's
SLOW_FACTOR = 4.0
#: seconds after which a node's mean no longer serves as the others' yardstick (no traffic)
STALE_SECONDS = 30.0
#: seconds between two probes of each slow node
PROBE_SECONDS = 1.0
#: the name a probe looks up (any valid name; its record does not matter, the round trip does)
PROBE_NAME = "/.filetracker-latency-probe"


class _Mean:
    __slots__ = ("value", "samples", "at")

    def __init__(self):
        self.value = 0.0
        self.samples = 0
        self.at = 0.0


class ReplicaLatency:
    """Round-trip means per node URL, and the set of slow nodes they make.

    :meth:`observe` takes one round trip; :attr:`slow` is a frozenset, replaced
    (never mutated) when it changes, so readers may keep it.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._means = {}   # url -> _Mean
        self.slow = frozenset()

    def observe(self, url, seconds):
        """Take one round trip of ``seconds`` to ``url`` (a lookup or read batch it answered)."""
        mean = self._means.get(url)
        if mean is None:
            mean = self._means[url] = _Mean()
        mean.value = seconds if mean.samples == 0 else ALPHA * seconds + (1 - ALPHA) * mean.value
        mean.samples += 1
        mean.at = self._clock()
        self._judge()

    def forget(self, keep):
        """Drop the means of nodes not in ``keep`` (URLs; after a ring change removed them)."""
        keep = set(keep)
        for url in [u for u in self._means if u not in keep]:
            del self._means[url]
        self._judge()

    def mean(self, url):
        """The node's mean round trip in seconds, or None before its first."""
        mean = self._means.get(url)
        return None if mean is None or mean.samples == 0 else mean.value

    def _judge(self):
        now = self._clock()
        fresh = {url: m.value for url, m in self._means.items()
                 if m.samples > 0 and now - m.at < STALE_SECONDS}
        slow = set()
        for url, m in self._means.items():
            if m.samples < MIN_SAMPLES or m.value <= SLOW_FLOOR:
                continue
            others = [v for u, v in fresh.items() if u != url]
            if others and m.value > SLOW_FACTOR * min(others):
                slow.add(url)
        if slow != self.slow:
            for url in sorted(slow - self.slow):
                log.warning("node %s is slow (%.0f ms a lookup, the fastest other %.0f ms): reads ask it last",
                            url, self._means[url].value * 1000,
                            min(v for u, v in fresh.items() if u != url) * 1000)
            for url in sorted(self.slow - slow):
                log.info("node %s is no longer slow: reads ask it again", url)
            self.slow = frozenset(slow)

    def fast_first(self, nodes):
        """``nodes`` (objects with ``.url``) with the slow ones moved to the end, order kept."""
        slow = self.slow
        if not slow:
            return nodes
        return [n for n in nodes if n.url not in slow] + [n for n in nodes if n.url in slow]

    def snapshot(self):
        """``{url: {"ms": mean in ms, "slow": bool}}`` for the status page and metrics."""
        return {url: {"ms": round(m.value * 1000, 2), "slow": url in self.slow}
                for url, m in sorted(self._means.items()) if m.samples > 0}


async def probe_forever(latency, lookup, interval=PROBE_SECONDS):
    """While nodes are slow, time a one-name lookup to each every ``interval`` seconds.

    ``lookup(url, name)`` is the gateway's batched lookup (its round trip is
    observed where every batch's is); a probe that fails is left to the
    liveness marks.  Runs until cancelled.
    """
    while True:
        await asyncio.sleep(interval)
        slow = latency.slow
        if not slow:
            continue
        probes = [lookup(url, PROBE_NAME) for url in sorted(slow)]
        await asyncio.gather(*probes, return_exceptions=True)
