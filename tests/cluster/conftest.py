"""Shared fixtures: clusters of real ``filetracker-node`` (and gateway) processes on loopback.

``cluster_factory(nodes=3, ...)`` starts a :class:`NodeCluster` and stops it
at the end of the test; ``NodeCluster`` exposes node URLs and folders, the
services (``kill9``, ``restart``, ``pause``, ``resume``), a
:class:`~cluster.peers.PeerClient` carrying the secret, and helpers to write,
read and list records on one node through the internal API.
"""

import hashlib
import os

import pytest
import requests

from cluster.peers import PeerClient, quote_name, record_from_headers
from cluster.ring import Ring
from filetracker.records import Record
from tests.support.procs import Service, free_port, script
from tests.support.waiting import wait_until  # noqa: F401 - re-exported

SECRET = "test-cluster-secret-0123456789"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class NodeCluster:
    """``nodes`` node processes forming one ring (+ optionally a gateway)."""

    __test__ = False

    def __init__(self, tmp, nodes=3, replicas=3, secret=SECRET, sync_interval=None, node_args=(),
                 gateway=False, gateway_args=(), members=None):
        self.tmp = str(tmp)
        self.replicas = replicas
        self.secret = secret
        self.secret_file = None
        if secret:
            self.secret_file = os.path.join(self.tmp, "secret")
            with open(self.secret_file, "w") as f:
                f.write(secret + "\n")
        self.ports = [free_port() for _ in range(nodes)]
        self.urls = ["http://127.0.0.1:%d" % p for p in self.ports]
        self.dirs = [os.path.join(self.tmp, "node%d" % i) for i in range(nodes)]
        self.sync_interval = sync_interval
        self.node_args = list(node_args)
        self.node_extra_args = {}   # node index -> arguments for that node only (e.g. --advertise)
        self.services = [None] * nodes
        # The initial ring's members: the first ``members`` nodes (default all).  A node
        # outside it starts with every URL as peers (it waits for a ring from the admin).
        self.members = list(self.urls[:members or nodes])
        self.want_gateway = gateway
        self.gateway_args = list(gateway_args)
        self.gateway = None
        self.gateway_url = None
        self.client = PeerClient(secret=secret, timeout=30)

    # ------------------------------------------------------------------ processes

    @property
    def ring(self):
        return Ring.initial(self.members, replicas=self.replicas)

    def node_argv(self, i):
        argv = [script("filetracker-node"), "--dir", self.dirs[i], "--port", str(self.ports[i]),
                "--peers", ",".join(u for u in (self.members if self.urls[i] in self.members else self.urls)
                                     if u != self.urls[i]),
                "--replicas", str(self.replicas), "--log-level", "INFO"]
        if self.secret_file:
            argv += ["--cluster-secret-file", self.secret_file]
        if self.sync_interval is None:
            argv += ["--no-background"]
        else:
            argv += ["--sync-interval", str(self.sync_interval)]
        return argv + self.node_args + list(self.node_extra_args.get(i, ()))

    def start_node(self, i):
        svc = Service(self.node_argv(i), os.path.join(self.tmp, "node%d.log" % i),
                      ready_url=self.urls[i] + "/version/")
        self.services[i] = svc.start()
        return svc

    def start(self):
        for i in range(len(self.urls)):
            self.start_node(i)
        if self.want_gateway:
            self.start_gateway()
        return self

    def start_gateway(self):
        port = free_port()
        self.gateway_url = "http://127.0.0.1:%d" % port
        argv = [script("filetracker-gateway"), "--port", str(port), "--nodes", ",".join(self.urls),
                "--log-level", "WARNING"] + self.gateway_args
        if self.secret_file:
            argv += ["--cluster-secret-file", self.secret_file]
        self.gateway = Service(argv, os.path.join(self.tmp, "gateway.log"),
                               ready_url=self.gateway_url + "/version/").start()
        return self.gateway

    def kill9(self, i):
        self.services[i].kill9()

    def stop_node(self, i):
        self.services[i].stop()

    def restart(self, i):
        if self.services[i] is not None and self.services[i].alive():
            self.services[i].stop()
        return self.start_node(i)

    def pause(self, i):
        self.services[i].pause()

    def resume(self, i):
        self.services[i].resume()

    def stop(self):
        if self.gateway is not None:
            self.gateway.stop()
        for s in self.services:
            if s is not None:
                s.stop()
        self.client.close()

    def logs(self):
        parts = []
        for s in [self.gateway] + self.services:
            if s is not None:
                parts.append("==== %s\n%s" % (s.log_path, s.log_tail(3000)))
        return "\n".join(parts)

    # ------------------------------------------------------------------ talking to one node

    def headers(self, **extra):
        h = {"X-Cluster-Secret": self.secret} if self.secret else {}
        h.update(extra)
        return h

    def put(self, i, name, data, version, **headers):
        """PUT one replica on node ``i`` (internal API); returns the response."""
        return requests.put(self.urls[i] + "/_cluster/files" + quote_name(name), params={"version": version},
                            data=data, headers=self.headers(**headers), timeout=30)

    def delete(self, i, name, version):
        return requests.delete(self.urls[i] + "/_cluster/files" + quote_name(name),
                               params={"version": version}, headers=self.headers(), timeout=30)

    def record(self, i, name):
        """Node ``i``'s record of ``name`` (tombstones included) or None."""
        r = requests.head(self.urls[i] + "/_cluster/files" + quote_name(name), headers=self.headers(), timeout=30)
        assert r.status_code in (200, 404), r.headers
        return record_from_headers(name, r.headers)

    def content(self, i, name):
        r = requests.get(self.urls[i] + "/_cluster/files" + quote_name(name), headers=self.headers(), timeout=30)
        return r.content if r.status_code == 200 else None

    def listing(self, i, folder="/"):
        """``{name: Record}`` of every record node ``i`` holds (tombstones too)."""
        return {n: Record(n, v, s, z, bool(d)) for n, v, s, z, d in self.client.list_folder(self.urls[i], folder)}

    def run(self, i, task="sync"):
        return self.client.run_task(self.urls[i], task)

    def status(self, i):
        return self.client.status(self.urls[i])


@pytest.fixture
def cluster_factory(tmp_path):
    """``make(nodes=3, replicas=3, secret=SECRET, sync_interval=None, node_args=(), gateway=False, members=None)``.

    ``sync_interval=None`` starts nodes with ``--no-background`` (passes run only
    when a test calls ``cluster.run(i, task)``).  Every cluster is stopped at teardown.
    """
    made = []

    def make(nodes=3, **kwargs):
        sub = tmp_path / ("c%d" % len(made))
        sub.mkdir()
        c = NodeCluster(sub, nodes=nodes, **kwargs)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()
