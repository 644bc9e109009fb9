"""The gateway's picture of the cluster: the current ring and which nodes answer.

* The ring is fetched once from any node (``GET /_cluster/ring``) and kept; it
  is refetched only when some node answers with a higher ``X-Ring-Epoch``
  (one refresh at a time), never per request.
* Liveness: a node that refused a connection or timed out is *down*; requests
  skip it.  A background probe asks it again every ``probe_interval`` and
  marks it up when it answers (but not before ``down_seconds`` passed), so a
  hung node costs at most one timeout, not one per request.
* A node that answers 403 to the internal API refuses the gateway's cluster
  secret (wrong, or missing): that is logged as a warning (once per node per
  :data:`REFUSAL_LOG_INTERVAL`), and the 503 of a request that found no ring
  says so.
"""

import asyncio
import logging
import time

import msgpack

from cluster.gateway.holders import ForeignHolders
from cluster.gateway.latency import ReplicaLatency
from cluster.ring import Ring, partition_of

log = logging.getLogger(__name__)

#: seconds between two ring fetches while a request waits for the first ring
RING_RETRY = 0.2
#: seconds between two warnings about the same node refusing the cluster secret
REFUSAL_LOG_INTERVAL = 60.0
#: replaced rings remembered (newest first): reads ask their owners on a miss, and those of the
#: rings replaced within ``transition_reads`` seconds on every read of a moved name
RINGS_KEPT = 8


class NoRing(Exception):
    """No node answered with a ring: the cluster is unreachable."""


class NodeRef:
    """A ring member as the gateway needs it: its id (for hints) and its URL."""

    __slots__ = ("id", "url")

    def __init__(self, node_id, url):
        self.id = node_id
        self.url = url.rstrip("/")

    def __repr__(self):
        return "NodeRef(%r)" % self.url


def _node_ref(ring, entry):
    """Adapt whatever the ring's preference list holds (node object, dict or id)."""
    if isinstance(entry, str):
        for n in _ring_nodes(ring):
            if n.id == entry:
                return n
        return NodeRef(entry, entry)
    if isinstance(entry, dict):
        return NodeRef(entry["id"], entry.get("url") or entry["id"])
    return NodeRef(entry.id, getattr(entry, "url", None) or entry.id)


def _ring_nodes(ring):
    out = []
    for n in ring.nodes:
        if isinstance(n, dict):
            out.append(NodeRef(n["id"], n.get("url") or n["id"]))
        elif isinstance(n, str):
            out.append(NodeRef(n, n))
        else:
            out.append(NodeRef(n.id, getattr(n, "url", None) or n.id))
    return out


class Placement:
    """Where one name lives: ``owners`` (first N of the preference list) and
    ``handoffs`` (the rest, in order)."""

    __slots__ = ("owners", "handoffs")

    def __init__(self, owners, handoffs):
        self.owners = owners
        self.handoffs = handoffs


class ClusterView:
    """Ring + liveness.  Also the observer of :class:`cluster.gateway.nodes.NodeClient`."""

    def __init__(self, config):
        self._config = config
        self._seeds = [u.rstrip("/") for u in config.nodes]
        self._ring = None
        self._replaced = []          # [(ring, monotonic time it was replaced)], newest first
        self._previous_cache = {}    # (epoch, partition) -> owners under that replaced ring
        self._nodes = []
        self._placement_cache = {}
        self._refs = {}      # url -> NodeRef (see _install)
        self._refreshing = None
        self._down = {}      # url -> monotonic time it was marked down
        self._probes = {}    # url -> probe task
        self._refused = {}   # url -> monotonic time of its last 403 (the cluster secret refused)
        self._refusal_logged = {}  # url -> monotonic time of the last warning about it
        #: which nodes hold partitions they do not own (polled: cluster/gateway/holders.py)
        self.holders = ForeignHolders()
        #: how fast each node answers fetch batches: reads ask a much slower node last (cluster/gateway/latency.py)
        self.latency = ReplicaLatency()
        self.client = None   # set by attach()

    def attach(self, client):
        self.client = client

    # ---- ring -----------------------------------------------------------------

    @property
    def ring(self):
        return self._ring

    @property
    def epoch(self):
        return -1 if self._ring is None else int(self._ring.epoch)

    def all_nodes(self):
        """Every ring member (empty before the ring is known)."""
        return list(self._nodes)

    async def get_ring(self):
        """The current ring, fetching it first if there is none yet; NoRing if unreachable.

        Without a ring (a gateway started before its nodes) the request waits
        for one, retrying every :data:`RING_RETRY` s, for at most the timeout:
        nodes that are still starting cost the first requests a short wait, not
        a 503.  When every node asked refused the gateway's cluster secret (403)
        the answer is NoRing at once: a wrong secret does not mend itself while a
        request waits.
        """
        if self._ring is not None:
            return self._ring
        started = time.monotonic()
        deadline = started + self._config.timeout
        while True:
            await self.refresh()
            if self._ring is not None:
                return self._ring
            left = deadline - time.monotonic()
            if left <= 0 or self._all_refused(started):
                raise NoRing("no cluster node answered with a ring" + self._refusal_hint(started))
            await asyncio.sleep(min(RING_RETRY, left))

    def _ring_sources(self):
        """The nodes a ring is fetched from: the known members, then the seeds (``--nodes``)."""
        return [n.url for n in self._nodes] + self._seeds

    def _all_refused(self, since):
        """True when every node the ring is fetched from refused the cluster secret after ``since``."""
        urls = self._ring_sources()
        return bool(urls) and all(self._refused.get(u, -1.0) >= since for u in urls)

    async def refresh(self, prefer=None):
        """Fetch the ring (single flight); install it when its epoch is newer."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.ensure_future(self._fetch_ring(prefer))
        try:
            await asyncio.shield(self._refreshing)
        finally:
            self._refreshing = None

    async def _fetch_ring(self, prefer):
        urls = ([prefer] if prefer else []) + self._ring_sources()
        seen = set()
        for url in urls:
            if url in seen:
                continue
            seen.add(url)
            # not observed: a node that does not answer yet (still starting) is not marked down
            reply = await self.client.request(url, "GET", "/_cluster/ring", observe=False)
            if reply.code != 200:
                continue
            try:
                doc = msgpack.unpackb(reply.body, raw=False)
                if self._ring is not None and int(doc["epoch"]) <= int(self._ring.epoch):
                    return   # known already: not built again (2**P placements)
                # in a thread: building a ring is long CPU work that must not stop the requests
                ring = await asyncio.get_running_loop().run_in_executor(None, Ring.from_dict, doc)
            except Exception as exc:  # noqa: BLE001 - a bad ring from one node must not stop us
                log.warning("bad ring from %s: %s", url, exc)
                continue
            self._install(ring)
            return

    def _install(self, ring):
        if self._ring is not None and int(ring.epoch) <= int(self._ring.epoch):
            return
        log.info("ring epoch %s installed (%d nodes)", ring.epoch, len(ring.nodes))
        if self._ring is not None:
            self._replaced = [(self._ring, time.monotonic())] + self._replaced[:RINGS_KEPT - 1]
            kept = {int(r.epoch) for r, _ in self._replaced}
            self._previous_cache = {k: v for k, v in self._previous_cache.items() if k[0] in kept}
        self._ring = ring
        self._nodes = _ring_nodes(ring)
        self._placement_cache = {}
        # every node of the current and the replaced rings by URL (the current ring's first)
        self._refs = {n.url: n for r in reversed([ring] + [r for r, _ in self._replaced]) for n in _ring_nodes(r)}
        # nodes no longer in any ring kept (widened reads may still ask those) are not judged on old answers
        self.latency.forget(self._refs)

    # ---- the cluster secret ---------------------------------------------------

    def _secret_problem(self):
        if self._config.cluster_secret:
            return "refused the cluster secret (403): check --cluster-secret-file (the nodes' secret)"
        return "requires the cluster secret (403): give the gateway --cluster-secret-file"

    def secret_refused(self, url, what=""):
        """Observer hook: ``url`` answered 403 to an internal request (``what``: method and path)."""
        now = time.monotonic()
        self._refused[url] = now
        last = self._refusal_logged.get(url)
        if last is None or now - last >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged[url] = now
            log.warning("node %s %s%s", url, self._secret_problem(), " [%s]" % what if what else "")

    def _refusal_hint(self, since):
        """``"; node X refused the cluster secret (403)..."`` when nodes did so after ``since``, else ""."""
        urls = [u for u, t in self._refused.items() if t >= since]
        if not urls:
            return ""
        return "; node%s %s %s" % ("s" if len(urls) > 1 else "", ", ".join(sorted(urls)), self._secret_problem())

    def epoch_seen(self, epoch, url):
        """Observer hook: a node answered with ``X-Ring-Epoch: epoch``."""
        if self._ring is not None and epoch > int(self._ring.epoch) and self._refreshing is None:
            asyncio.ensure_future(self.refresh(prefer=url))

    def placement(self, name):
        """Owners and handoff order of ``name`` under the current ring."""
        ring = self._ring
        p = partition_of(name, ring.partition_power)
        cached = self._placement_cache.get(p)
        if cached is None:
            prefs = [_node_ref(ring, e) for e in ring.preference_list(p)]
            n = min(int(getattr(ring, "n_replicas", ring.replicas)), len(prefs))
            cached = Placement(prefs[:n], prefs[n:])
            self._placement_cache[p] = cached
        return cached

    def previous_owners(self, name, within=None):
        """Owners of ``name`` under the rings this gateway saw replaced (newest first, each URL
        once; [] when it saw none), or only under those replaced less than ``within`` seconds ago.

        Right after a ring change the data of a partition may still sit only on
        its previous owners (anti-entropy and handoff have not moved it yet), and
        after two changes in a row on the owners of the ring before the last.
        """
        now = time.monotonic()
        out, seen = [], set()
        for ring, replaced_at in self._replaced:
            if within is not None and now - replaced_at >= within:
                break   # newest first: the rest were replaced earlier still
            p = partition_of(name, ring.partition_power)
            owners = self._previous_cache.get((int(ring.epoch), p))
            if owners is None:
                prefs = [_node_ref(ring, e) for e in ring.preference_list(p)]
                owners = prefs[:min(int(getattr(ring, "n_replicas", ring.replicas)), len(prefs))]
                self._previous_cache[(int(ring.epoch), p)] = owners
            for n in owners:
                if n.url not in seen:
                    seen.add(n.url)
                    out.append(n)
        return out

    def transition_owners(self, name):
        """The nodes besides its owners that a read of ``name`` asks too ([] at once in the
        steady state): those that held its partition without owning it at the last poll
        (:mod:`cluster.gateway.holders`), and its owners under the rings replaced less than
        ``transition_reads`` seconds ago when they are not all owners now.

        Both, not the poll alone: a poll is up to two cache periods old, and right after a
        change a gateway that has not learnt the new ring yet still writes to the former
        owners, after they answered the poll.
        """
        held = self.holders
        window = float(getattr(self._config, "transition_reads", 0.0))
        recent = bool(self._replaced) and time.monotonic() - self._replaced[0][1] < window
        if not recent and not held.any_held():
            return []
        current = {n.url for n in self.placement(name).owners}
        out = [self._ref(url) for url in held.holders(partition_of(name, self._ring.partition_power))
               if url not in current]
        if recent:
            previous = self.previous_owners(name, within=window)
            if any(n.url not in current for n in previous):
                seen = {n.url for n in out}
                out += [n for n in previous if n.url not in seen]
        return out

    def nodes_to_poll(self):
        """The URLs whose foreign partitions matter: the ring's members and the members of the
        rings replaced less than ``transition_reads`` seconds ago (a removed node may still
        hold data to hand off)."""
        window = float(getattr(self._config, "transition_reads", 0.0))
        now = time.monotonic()
        urls = [n.url for n in self._nodes]
        for ring, replaced_at in self._replaced:
            if now - replaced_at >= window:
                break
            urls += [n.url for n in _ring_nodes(ring)]
        return list(dict.fromkeys(urls))

    def _ref(self, url):
        """The :class:`NodeRef` of ``url`` from the current or a replaced ring."""
        return self._refs.get(url) or NodeRef(url, url)

    # ---- liveness -------------------------------------------------------------

    def live_urls(self):
        """The URLs of the ring members not marked down."""
        return [n.url for n in self._nodes if n.url not in self._down]

    def is_live(self, url):
        return url not in self._down

    def node_failed(self, url, reason=None):
        """Observer hook: ``url`` refused or timed out; skip it until a probe answers."""
        if url in self._down:
            return
        log.warning("node %s marked down%s", url, ": %s" % reason if reason else "")
        self._down[url] = time.monotonic()
        self._probes[url] = asyncio.ensure_future(self._probe(url))

    async def _probe(self, url):
        try:
            while True:
                await asyncio.sleep(self._config.probe_interval)
                reply = await self.client.request(url, "GET", "/version/",
                                                  timeout=min(self._config.timeout, 2.0), observe=False)
                if reply.code is not None:
                    wait = self._config.down_seconds - (time.monotonic() - self._down[url])
                    if wait > 0:
                        await asyncio.sleep(wait)
                    log.info("node %s is back", url)
                    return
        finally:
            self._down.pop(url, None)
            self._probes.pop(url, None)

    def close(self):
        for task in list(self._probes.values()):
            task.cancel()
