"""Launch real node and gateway processes on loopback for the gateway's end-to-end tests.

(No tests here: the launcher shared by ``test_gateway*.py`` and ``test_e2e*.py``.
It starts ``filetracker-node`` processes; ``FT_TEST_NODE_CMD`` may name another
node command, e.g. a stand-in used while the node was being written.)
"""

import email.utils
import hashlib
import os
import shlex

import msgpack
import requests

from cluster.ring import Ring
from filetracker.records import Record
from tests.support.procs import Service, free_port, script
from tests.support.waiting import wait_until  # noqa: F401 - re-exported

SECRET = "gateway-test-secret-42"
#: a fixed base version (Tue, 24 Nov 2026 20:00:00 UTC) so tests control ordering
BASE_VERSION = 1795550400


def http_date(version):
    return email.utils.formatdate(version)


def version_of(response):
    return int(email.utils.mktime_tz(email.utils.parsedate_tz(response.headers["Last-Modified"])))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def node_argv():
    custom = os.environ.get("FT_TEST_NODE_CMD")
    return shlex.split(custom) if custom else [script("filetracker-node")]


class TestCluster:
    """``nodes`` storage nodes (N=``replicas``) and ``gateways`` gateways, stopped by :meth:`stop`."""

    __test__ = False  # not a test class

    def __init__(self, tmp_path, nodes=3, replicas=3, gateways=1, gateway_args=(), node_args=(),
                 secret=SECRET):
        self.tmp = str(tmp_path)
        self.secret_file = None
        if secret:
            self.secret_file = os.path.join(self.tmp, "cluster-secret")
            with open(self.secret_file, "w") as f:
                f.write(secret + "\n")
        self.headers = {"X-Cluster-Secret": secret} if secret else {}
        self.replicas = replicas
        self.ports = [free_port() for _ in range(nodes)]
        self.node_urls = ["http://127.0.0.1:%d" % p for p in self.ports]
        self.gateway_args = list(gateway_args)
        self.node_args = list(node_args)
        self.nodes = [None] * nodes
        self.gateways = []
        self.gateway_urls = []
        self.n_gateways = gateways
        self.ring = Ring.initial(self.node_urls, replicas=replicas)

    def node_service(self, i):
        url = self.node_urls[i]
        peers = ",".join(u for u in self.node_urls if u != url)
        argv = node_argv() + ["--dir", os.path.join(self.tmp, "node%d" % i), "--host", "127.0.0.1",
                              "--port", str(self.ports[i]), "--peers", peers,
                              "--replicas", str(self.replicas)] + self.node_args
        if self.secret_file:
            argv += ["--cluster-secret-file", self.secret_file]
        return Service(argv, os.path.join(self.tmp, "node%d.log" % i), ready_url=url + "/version/")

    def start(self):
        for i in range(len(self.nodes)):
            self.nodes[i] = self.node_service(i).start()
        for _ in range(self.n_gateways):
            self.start_gateway()
        return self

    def start_gateway(self, extra_args=()):
        """Start one more gateway (``gateway_args`` then ``extra_args``); returns its URL."""
        port = free_port()
        url = "http://127.0.0.1:%d" % port
        argv = [script("filetracker-gateway"), "--port", str(port), "--nodes", ",".join(self.node_urls),
                "--log-level", "WARNING"] + self.gateway_args + list(extra_args)
        if self.secret_file:
            argv += ["--cluster-secret-file", self.secret_file]
        self.gateways.append(Service(argv, os.path.join(self.tmp, "gateway%d.log" % len(self.gateways)),
                                     ready_url=url + "/version/").start())
        self.gateway_urls.append(url)
        return url

    @property
    def gw(self):
        return self.gateway_urls[0]

    def restart_node(self, i):
        self.nodes[i] = self.node_service(i).start()

    def stop(self):
        for s in self.gateways + [n for n in self.nodes if n is not None]:
            s.stop()

    def logs(self):
        out = []
        for s in self.gateways + [n for n in self.nodes if n is not None]:
            out.append("==== %s\n%s" % (s.log_path, s.log_tail(3000)))
        return "\n".join(out)

    # ---- asking nodes directly ------------------------------------------------------

    def node_record(self, node_url, name):
        """The node's record of ``name`` (tombstones included) or None."""
        r = requests.head(node_url + "/_cluster/files" + name, headers=self.headers, timeout=10)
        if r.headers.get("X-Version") is None:
            return None
        return Record(name, int(r.headers["X-Version"]), r.headers.get("X-Sha256", ""),
                      int(r.headers.get("X-Size") or 0), r.headers.get("X-Deleted") == "1")

    def node_listing(self, node_url, folder="/"):
        """``{name: Record}`` of every record a node holds under ``folder`` (tombstones too)."""
        r = requests.get(node_url + "/_cluster/list" + folder, params={"max_version": 2**62},
                         headers=self.headers, timeout=30)
        r.raise_for_status()
        return {n: Record(n, int(v), s or "", int(z or 0), bool(d)) for n, v, s, z, d in
                msgpack.unpackb(r.content, raw=False)}
