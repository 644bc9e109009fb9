"""The systems under test, each started by us on 127.0.0.1 and stopped by process group.

* ``upstream``: the published filetracker 2.x server (its own venv, gunicorn
  with its default worker count, i.e. what users run today);
* ``server``: our single-node ``filetracker-server``;
* ``node``: one of our cluster nodes, answering the public protocol directly;
* ``gateway``: our gateway over 3 nodes (N=3, W=2).

A :class:`System` owns one or more :class:`tests.support.procs.Service` objects;
``start()`` waits until every one answers ``GET /version/``; ``peak_rss()``
reads VmHWM of every process in every group (children and workers included)
and must be called before ``stop()``.
"""

import os

from bench.procinfo import group_peak_rss
from tests.support import upstream
from tests.support.procs import Service, free_port, script

LOOPBACK = "127.0.0.1"


class System:
    def __init__(self, key, label, url, services):
        self.key = key
        self.label = label
        self.url = url
        self.services = services  # [(role, Service)] in start order

    def start(self):
        started = []
        try:
            for _role, svc in self.services:
                svc.start()
                started.append(svc)
        except Exception:
            for svc in reversed(started):
                svc.stop()
            raise
        return self

    def stop(self):
        for _role, svc in reversed(self.services):
            svc.stop()

    def peak_rss(self):
        rows = []
        for role, svc in self.services:
            if svc.alive():
                for row in group_peak_rss(svc.pid):
                    rows.append(dict(row, role=role))
        return rows

    def logs(self):
        return {role: svc.log_path for role, svc in self.services}


def _ours(name, args, workdir, role):
    port = free_port()
    url = "http://%s:%d" % (LOOPBACK, port)
    argv = [script(name)] + [a.format(port=port, url=url) for a in args]
    svc = Service(argv, os.path.join(workdir, "%s.log" % role), ready_url=url + "/version/", timeout=30)
    return url, svc


def make_upstream(workdir):
    if not upstream.available():
        raise RuntimeError("2.x server venv missing (scripts/setup-ft2-server.sh)")
    srv = upstream.UpstreamServer(os.path.join(workdir, "data"), log_path=os.path.join(workdir, "upstream.log"),
                                  workers=None, log_level="WARNING")
    return System("upstream", "upstream 2.3.3", srv.url, [("upstream", srv)])


def make_server(workdir, workers=None):
    """Our single-node server; ``workers=None`` keeps its default (one process)."""
    args = ["-D", "-l", LOOPBACK, "-p", "{port}", "-d", os.path.join(workdir, "data"), "--log-level", "WARNING"]
    if workers:
        args += ["--workers", str(workers)]
    url, svc = _ours("filetracker-server", args, workdir, "server")
    key = "server" if not workers else "server-w%d" % workers
    label = "our server" if not workers else "our server, %d workers" % workers
    return System(key, label, url, [(key, svc)])


def node_args(data_dir, port, peers, public_writes=False):
    """Command line of one cluster node; ``public_writes`` lets it be benchmarked directly."""
    args = ["--dir", data_dir, "--host", LOOPBACK, "--port", str(port), "--log-level", "WARNING"]
    if public_writes:
        args.append("--allow-public-writes")
    if peers:
        args += ["--peers", ",".join(peers)]
    return args


def make_node(workdir):
    port = free_port()
    url = "http://%s:%d" % (LOOPBACK, port)
    svc = Service([script("filetracker-node")] + node_args(os.path.join(workdir, "data"), port, [], public_writes=True),
                  os.path.join(workdir, "node.log"), ready_url=url + "/version/", timeout=30)
    return System("node", "one node", url, [("node", svc)])


def make_gateway(workdir, nodes=3, processes=1, node_extra=(), gateway_extra=()):
    ports = [free_port() for _ in range(nodes)]
    urls = ["http://%s:%d" % (LOOPBACK, p) for p in ports]
    services = []
    for i, port in enumerate(ports):
        peers = [u for j, u in enumerate(urls) if j != i]
        argv = [script("filetracker-node")] + node_args(os.path.join(workdir, "node%d" % i), port, peers)
        argv += list(node_extra)
        services.append(("node%d" % i, Service(argv, os.path.join(workdir, "node%d.log" % i),
                                               ready_url=urls[i] + "/version/", timeout=30)))
    gport = free_port()
    gurl = "http://%s:%d" % (LOOPBACK, gport)
    argv = [script("filetracker-gateway"), "--host", LOOPBACK, "--port", str(gport), "--nodes", ",".join(urls),
            "--write-quorum", "2", "--log-level", "WARNING"]
    if processes > 1:
        argv += ["--processes", str(processes)]
    argv += list(gateway_extra)
    services.append(("gateway", Service(argv, os.path.join(workdir, "gateway.log"),
                                        ready_url=gurl + "/version/", timeout=30)))
    if gateway_extra:
        return System("gateway-streamed-puts", "gateway %s (3 nodes, N=3 W=2)" % " ".join(gateway_extra),
                      gurl, services)
    if node_extra:
        return System("gateway-plain-nodes", "gateway (3 nodes %s, N=3 W=2)" % " ".join(node_extra),
                      gurl, services)
    if processes > 1:
        return System("gateway-p%d" % processes, "gateway x%d processes (3 nodes, N=3 W=2)" % processes,
                      gurl, services)
    return System("gateway", "gateway (3 nodes, N=3 W=2)", gurl, services)


FACTORIES = {
    "upstream": make_upstream,
    "server": make_server,
    "node": make_node,
    "gateway": make_gateway,
    # Optional (not in the default run): our server with one worker per CPU, as
    # the 2.x server runs several gunicorn workers.
    "server-w2": lambda workdir: make_server(workdir, workers=2),
    # the gateway with --processes 2 (one per core here): 1 vs 2 processes, side by side
    "gateway-p2": lambda workdir: make_gateway(workdir, processes=2),
    # the nodes without their front for POST /_cluster/fetch: with and without, side by side
    "gateway-plain-nodes": lambda workdir: make_gateway(workdir, node_extra=("--no-fast-fetch",)),
    # every PUT streamed to each replica (small PUTs not batched): with and without, side by side
    "gateway-streamed-puts": lambda workdir: make_gateway(workdir, gateway_extra=("--no-batch-writes",)),
}
ORDER = ["upstream", "server", "node", "gateway", "gateway-p2"]
