"""Cluster gauges of the gateway for its ``/metrics`` (see :mod:`filetracker.server.observe`).

:class:`GatewayCollector` reads the gateway's in-memory picture of the
cluster (:class:`cluster.gateway.view.ClusterView`) at scrape time: ring
epoch, members, replicas, partitions, and per ring member whether the gateway
currently sends it requests (``filetracker_gateway_node_up{node}``; a node is
marked down after a refused or timed-out exchange and up again once a probe
answers).  Nothing here talks to a node, so a scrape is cheap.

The figures are per process: a gateway run with several processes answers
``/metrics`` from whichever process took the connection.
"""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from filetracker.server.observe import collector_registry, gauge

P = "filetracker_gateway_"


class GatewayCollector:
    """A prometheus_client collector over the gateway's :class:`~cluster.gateway.app.Services`."""

    def __init__(self, services):
        self.services = services

    def collect(self):
        view = self.services.view
        ring = view.ring
        nodes = view.all_nodes()
        yield _gauge("ring_epoch", "Epoch of the ring the gateway routes by (-1: none yet)", view.epoch)
        yield _gauge("ring_members", "Nodes in the ring", len(nodes))
        if ring is not None:
            yield _gauge("ring_replicas", "Copies of every file (N)", int(ring.n_replicas))
            yield _gauge("ring_partitions", "Partitions of the ring", int(ring.partitions))
        up = GaugeMetricFamily(P + "node_up", "1 while the gateway sends requests to the node, 0 while it is "
                               "marked down", labels=["node"])
        down = 0
        for n in nodes:
            live = view.is_live(n.url)
            down += not live
            up.add_metric([n.url], 1 if live else 0)
        yield up
        yield _gauge("nodes_down", "Ring members currently marked down", down)
        slow = GaugeMetricFamily(P + "node_slow", "1 while the node answers fetch batches much slower than the "
                                 "other nodes (reads ask it last)", labels=["node"])
        fetch = GaugeMetricFamily(P + "node_fetch_seconds", "Mean time to the first byte of the node's "
                                   "answers to fetch batches: lookups and small reads (exponentially weighted)",
                                   labels=["node"])
        for n in nodes:
            slow.add_metric([n.url], 1 if n.url in view.latency.slow else 0)
            mean = view.latency.mean(n.url)
            if mean is not None:
                fetch.add_metric([n.url], mean)
        yield slow
        yield fetch
        stores = getattr(self.services, "stores", None)
        if stores is not None:  # batched small PUTs (cluster/gateway/smallput.py)
            yield _counter("store_batches", "POST /_cluster/store requests sent to nodes", stores.batches)
            yield _counter("store_batch_files", "Files sent in those requests (one per replica)", stores.files)
            yield _counter("store_queue_refusals", "Replicas of small PUTs refused because the queue for "
                           "their node was full (sent to a handoff node instead)", stores.refused)
            yield _gauge("store_queued_bytes", "Content of small PUTs waiting for a request to their node",
                         stores.queued_bytes())
        yield _gauge("background_tasks", "Replica writes and read repairs still running after their answer",
                     len(getattr(self.services, "_background", ())))


def _gauge(name, doc, value):
    return gauge(P + name, doc, value)


def _counter(name, doc, value):
    family = CounterMetricFamily(P + name, doc)
    family.add_metric([], value)
    return family


def gateway_registry(services):
    """A new registry holding the gateway's collector and the process metrics."""
    return collector_registry(GatewayCollector(services))
