"""Cluster gauges of one storage node for its ``/metrics`` (see :mod:`filetracker.server.observe`).

:class:`NodeCollector` reads what the node already tracks, at scrape time:

* ring: epoch, members, partitions owned, partitions held, partitions held
  but not owned (data waiting to move away: rebalance progress);
* disk: live files, stored bytes, tombstones, replaced blobs still kept for
  reads under way (``--keep-replaced``), free bytes of the data folder,
  and records waiting for handoff (hints and moved partitions).  These read
  the store (SQLite aggregates), so they are cached for ``cache_seconds``: a
  scrape costs at most one store scan per interval, whatever the scrapers do;
* replication: per background task its passes, last duration and whether the
  last pass failed; from the last anti-entropy pass the partitions that
  differed from a replica, the peers down, records pulled and pushed; from the
  last handoff pass the records kept and pushed; hinted writes taken.

Collection is blocking (the store); ``/metrics`` runs it in the node's executor.
"""

import threading
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from filetracker.server.observe import collector_registry, gauge

P = "filetracker_node_"


class NodeCollector:
    """A prometheus_client collector over a :class:`cluster.node.state.NodeState`."""

    def __init__(self, node, cache_seconds=5.0):
        self.node = node
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached = None
        self._cached_at = 0.0

    def _disk(self):
        """Store stats + pending handoff, recomputed at most every ``cache_seconds``."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached_at >= self.cache_seconds:
                stats = dict(self.node.store.stats())
                ring = self.node.ring
                held = self.node.store.partitions()
                stats["partitions_held"] = len(held)
                stats["partitions_foreign"] = sum(1 for p in held if not ring.owns(self.node.id, p))
                stats["pending_handoff"] = self.node.pending_handoff()
                self._cached, self._cached_at = stats, now
            return self._cached

    def collect(self):
        node = self.node
        ring = node.ring
        yield _gauge("ring_epoch", "Epoch of the ring this node holds", ring.epoch)
        yield _gauge("ring_members", "Nodes in the ring", len(ring.nodes))
        yield _gauge("ring_replicas", "Copies of every file (N)", ring.n_replicas)
        yield _gauge("partitions_owned", "Partitions this node owns under its ring",
                     len(ring.owned_partitions(node.id)))
        disk = self._disk()
        yield _gauge("partitions_held", "Partitions holding at least one record here", disk["partitions_held"])
        yield _gauge("partitions_foreign", "Partitions held here that this node does not own (to hand off; "
                     "rebalance progress)", disk["partitions_foreign"])
        yield _gauge("pending_handoff_records", "Records held for partitions this node does not own "
                     "(hints, moved partitions)", disk["pending_handoff"])
        yield _gauge("store_files", "Live files stored", disk["files"])
        yield _gauge("store_bytes", "Bytes of live files stored", disk["bytes"])
        yield _gauge("store_tombstones", "Deletion records kept", disk["tombstones"])
        yield _gauge("retired_blobs", "Replaced blobs kept readable for reads under way (--keep-replaced)",
                     disk["retired_files"])
        yield _gauge("retired_bytes", "Bytes of replaced blobs kept for reads under way, on top of "
                     "store_bytes", disk["retired_bytes"])
        yield _gauge("disk_free_bytes", "Free bytes of the data folder's filesystem (for this user)",
                     disk["free_bytes"])
        hints = CounterMetricFamily(P + "hints_taken", "Hinted writes accepted for another node since start")
        hints.add_metric([], node.hints_taken)
        yield hints
        batched = CounterMetricFamily(P + "batched_files", "Files a gateway's batched small PUTs (POST "
                                      "/_cluster/store) merged here since start (stored, or superseded)")
        batched.add_metric([], node.batched_files)
        yield batched
        cache = node.read_cache.stats()
        lookups = CounterMetricFamily(P + "read_cache_lookups", "Read-cache lookups (records and small "
                                      "bodies answered without a disk hop)", labels=["result"])
        lookups.add_metric(["hit"], cache["hits"])
        lookups.add_metric(["miss"], cache["misses"])
        yield lookups
        yield _gauge("read_cache_bytes", "Bytes held by the read cache (bodies + per-entry charge)", cache["bytes"])

        passes = CounterMetricFamily(P + "task_passes", "Background passes run", labels=["task"])
        seconds = GaugeMetricFamily(P + "task_last_pass_seconds", "Duration of the last pass", labels=["task"])
        failed = GaugeMetricFamily(P + "task_last_pass_failed", "1 if the last pass failed", labels=["task"])
        for name, task in sorted(node.tasks.items()):
            passes.add_metric([name], task.passes)
            last = task.last or {}
            if "seconds" in last:
                seconds.add_metric([name], last["seconds"])
            failed.add_metric([name], 1 if task.last_error else 0)
        yield passes
        yield seconds
        yield failed

        sync = _last(node, "sync")
        if sync is not None and "error" not in sync:
            yield _gauge("sync_partitions_differing", "Partition replicas that differed from a peer "
                         "in the last anti-entropy pass, at both looks (replication lag)", sync.get("differing", 0))
            yield _gauge("sync_partitions_transient", "Partition replicas that differed from a peer at the "
                         "first look only in the last anti-entropy pass (writes in flight)",
                         sync.get("transient", 0))
            yield _gauge("sync_peers_down", "Peers unreachable in the last anti-entropy pass",
                         len(sync.get("peers_down", ())))
            yield _gauge("sync_last_pulled_records", "Records pulled in the last anti-entropy pass",
                         sync.get("pulled", 0))
            yield _gauge("sync_last_pushed_records", "Records pushed in the last anti-entropy pass",
                         sync.get("pushed", 0))
        handoff = _last(node, "handoff")
        if handoff is not None and "error" not in handoff:
            yield _gauge("handoff_last_kept_records", "Records still held for others after the last "
                         "handoff pass", handoff.get("kept", 0))
            yield _gauge("handoff_last_pushed_records", "Records pushed to owners in the last handoff pass",
                         handoff.get("pushed", 0))


def _last(node, name):
    task = node.tasks.get(name)
    return None if task is None else task.last


def _gauge(name, doc, value):
    return gauge(P + name, doc, value)


def node_registry(node):
    """A new registry holding the node's collector and the process metrics (memory, CPU, fds)."""
    return collector_registry(NodeCollector(node))
