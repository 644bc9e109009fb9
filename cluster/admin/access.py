"""How the admin talks to a cluster: find it, read its ring, take snapshots, spread rings.

Everything goes through the nodes' internal API (:class:`cluster.peers.PeerClient`),
many nodes at once from a small thread pool.  A node that does not answer is
reported as *down* (a :class:`NodeView` with ``up=False`` and the reason), never
raised: every command must give a correct answer with nodes down.

:class:`AdminError` is a failure the CLI prints as one line and exits 1 with.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cluster.peers import PeerClient, PeerError

#: Passes of node tasks may take long (a whole partition set to move).
PASS_TIMEOUT = 900.0


class AdminError(Exception):
    """A failure the command reports as ``filetracker-admin: <message>`` with exit status 1."""


@dataclass
class NodeView:
    """What the admin learnt from one node in one snapshot."""

    id: str
    url: str
    member: bool                 # in the ring being judged (False: a node being drained)
    up: bool = False
    error: str | None = None     # why it is down
    ring: object = None          # its Ring
    status: dict | None = None   # its GET /_cluster/status document
    digests: dict = field(default_factory=dict)   # {partition: digest} of what it holds


def describe_error(e):
    """A one-line reason for a PeerError, with the fix when we know it."""
    if isinstance(e, PeerError) and e.status == 403:
        if e.secret_sent:
            return "refused (403): the cluster secret given was refused (the nodes have another one)"
        return "refused (403): the cluster has a secret; pass --cluster-secret-file"
    if isinstance(e, PeerError) and e.status is None:
        text = str(e)
        for needle, reason in (("refused", "connection refused"), ("timed out", "timed out"),
                               ("Read timed out", "timed out"), ("reset", "connection reset")):
            if needle in text:
                return "unreachable: %s" % reason
        return "unreachable (%s)" % _short(text)
    return _short(str(e))


def _short(text, limit=160):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class SilenceAwareClient(PeerClient):
    """A :class:`PeerClient` that does not wait for a node again soon after it timed out.

    One command asks each node several times in a row (its ring, the leaving members, its
    status): a frozen node cost the whole timeout each time (``status`` took 31 s with one
    node stopped by SIGSTOP, three timeouts).  A node whose request timed out fails at once,
    with the same reason, for the next ``timeout`` seconds; then it is asked again (a
    command waiting for a node to come back still sees it come back).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._silent = {}   # url -> (monotonic time until which it is not asked, the PeerError)

    def request(self, method, url, path, ok=(200,), **kwargs):
        key = url.rstrip("/")
        silent = self._silent.get(key)
        if silent is not None and time.monotonic() < silent[0]:
            raise silent[1]
        try:
            return super().request(method, url, path, ok, **kwargs)
        except PeerError as e:
            if e.status is None and "timed out" in str(e):
                self._silent[key] = (time.monotonic() + self.timeout[1], e)
            raise


class ClusterAccess:
    """The admin's connection to one cluster, starting from ``seeds`` (node URLs)."""

    def __init__(self, seeds, secret=None, timeout=10.0, workers=8):
        self.seeds = [s.rstrip("/") for s in seeds]
        self.client = SilenceAwareClient(secret=secret, timeout=timeout, connect_timeout=min(2.0, timeout))
        self._open_probe = PeerClient(secret=None, timeout=timeout, connect_timeout=min(2.0, timeout))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="admin")

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._open_probe.close()
        self.client.close()

    def requires_secret(self, url):
        """Whether the node at ``url`` refuses its internal API to a request without the secret.

        True for a 403, False for a 200 to ``GET /_cluster/status`` sent without
        the secret; PeerError when it cannot tell (down, another error).
        """
        resp = self._open_probe.request("GET", url, "/_cluster/status", ok=(200, 403))
        return resp.status_code == 403

    def map(self, fn, items):
        """``[(item, result, error)]`` of ``fn(item)`` run concurrently; errors are caught."""
        def call(item):
            try:
                return item, fn(item), None
            except Exception as e:  # noqa: BLE001 - reported per node, never a traceback
                return item, None, e
        return list(self._pool.map(call, list(items)))

    # ------------------------------------------------------------------ rings

    def discover(self, extra=()):
        """The newest ring any reachable node holds, and ``{url: Ring or exception}`` of every node asked.

        Asks the seeds, then every member of the newest ring found (and ``extra``
        URLs), until no newer epoch turns up.  AdminError when nobody answers.
        """
        rings = {}
        asked = set()
        todo = list(dict.fromkeys(self.seeds + [u.rstrip("/") for u in extra]))
        newest = None
        for _ in range(5):
            for url, ring, err in self.map(self.client.get_ring, [u for u in todo if u not in asked]):
                asked.add(url)
                rings[url] = ring if err is None else err
                if ring is not None and (newest is None or ring.epoch > newest.epoch):
                    newest = ring
            if newest is None:
                break
            todo = [n.url for n in newest.nodes if n.url not in asked]
            if not todo:
                break
        if newest is None:
            reasons = "; ".join("%s: %s" % (u, self._seed_reason(e)) for u, e in rings.items())
            raise AdminError("no cluster node answered (%s)" % reasons)
        return newest, rings

    @staticmethod
    def _seed_reason(e):
        if isinstance(e, PeerError) and e.status in (404, 405):
            return "no /_cluster/ring here: give the URL of a storage node (or a gateway that serves it)"
        return describe_error(e)

    def put_ring(self, ring, urls):
        """Install ``ring`` on each URL: ``{url: None (installed or already there) or error text}``."""
        out = {}
        for url, accepted, err in self.map(lambda u: self.client.put_ring(u, ring), urls):
            if err is not None:
                out[url] = describe_error(err)
            elif not accepted:
                out[url] = "refused: it holds a newer or conflicting ring"
            else:
                out[url] = None
        return out

    @staticmethod
    def lagging(ring, rings):
        """The URLs of the reachable members of ``ring`` whose ring in ``rings`` is older."""
        return [n.url for n in ring.nodes
                if not isinstance(rings.get(n.url), Exception) and rings.get(n.url) is not None
                and rings[n.url].epoch < ring.epoch]

    def spread_ring(self, ring, rings):
        """Give ``ring`` to every reachable member still holding an older one; returns their URLs."""
        lagging = self.lagging(ring, rings)
        if lagging:
            self.put_ring(ring, lagging)
        return lagging

    # ------------------------------------------------------------------ snapshots

    def view(self, url, node_id=None, digests=True):
        """One node's :class:`NodeView` (status, ring, digests); down when any exchange fails.

        ``node_id`` is its id in the ring (a member); None for a node outside
        the ring (being drained), whose id its status tells.
        """
        v = NodeView(id=node_id or url, url=url, member=node_id is not None)
        try:
            v.status = self.client.status(url)
            if node_id is None:
                v.id = v.status.get("id", v.id)
            v.ring = self.client.get_ring(url)
            if digests:
                v.digests = self.client.digests(url)
            v.up = True
        except (PeerError, ValueError) as e:
            v.up, v.error = False, describe_error(e)
        return v

    def snapshot(self, ring, extra=(), digests=True):
        """Views of every ring member and every ``extra`` URL (nodes being drained), in ring order."""
        targets = [(n.url, n.id) for n in ring.nodes]
        members = {n.url for n in ring.nodes} | {n.id for n in ring.nodes}
        targets += [(u.rstrip("/"), None) for u in dict.fromkeys(extra) if u.rstrip("/") not in members]
        results = self.map(lambda t: self.view(t[0], t[1], digests), targets)
        return [v for _, v, _ in results]

    def partition_records(self, url, partition):
        return self.client.partition_records(url, partition)

    def run_task(self, url, task, timeout=PASS_TIMEOUT):
        return self.client.run_task(url, task, timeout=timeout)
