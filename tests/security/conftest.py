"""Processes shared by the security tests (started once per session, to keep the suite fast).

``nodes3``: three storage nodes (cluster secret, ``--allow-public-writes`` so the
bad-input table reaches a node's own upload checks); each module starts its own
gateway(s) on them with :func:`start_gateway`.  ``lone_node``: one node with the
default (read-only public API), ``--max-uploads 1`` and a 1 s body idle timeout.
"""

import os

import pytest

from tests.cluster.conftest import NodeCluster
from tests.support.procs import Service, free_port, script


@pytest.fixture(scope="session")
def nodes3(tmp_path_factory):
    c = NodeCluster(tmp_path_factory.mktemp("nodes3"), nodes=3, node_args=["--allow-public-writes"])
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def lone_node(tmp_path_factory):
    c = NodeCluster(tmp_path_factory.mktemp("lone"), nodes=1, replicas=1,
                    node_args=["--max-uploads", "1", "--body-idle-timeout", "1"])
    c.start()
    try:
        yield c
    finally:
        c.stop()


class Gateway:
    """A gateway process over a :class:`NodeCluster`; ``url``, ``log_path``, ``stop()``."""

    def __init__(self, cluster, args, log_path):
        port = free_port()
        self.url = "http://127.0.0.1:%d" % port
        self.log_path = str(log_path)
        argv = [script("filetracker-gateway"), "--port", str(port), "--nodes", ",".join(cluster.urls),
                "--log-level", "WARNING"] + list(args)
        if cluster.secret_file:
            argv += ["--cluster-secret-file", cluster.secret_file]
        self.service = Service(argv, self.log_path, ready_url=self.url + "/version/").start()

    def stop(self):
        self.service.stop()

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def start_gateway(cluster, args, tmp_dir, name="gateway"):
    return Gateway(cluster, args, os.path.join(str(tmp_dir), name + ".log"))
