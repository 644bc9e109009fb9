"""The admin accepts a gateway URL: the gateway serves its ring at /_cluster/ring."""

import json

import msgpack
import requests

from tests.cluster.test_admin_support import admin


def test_gateway_serves_its_ring_and_admin_works_through_it(cluster_factory):
    c = cluster_factory(nodes=3, gateway=True)
    # without the secret: refused, nothing revealed
    r = requests.get(c.gateway_url + "/_cluster/ring", timeout=10)
    assert r.status_code == 403 and r.headers.get("X-Exception")
    headers = {"X-Cluster-Secret": open(c.secret_file).read().strip()} if c.secret_file else {}
    r = requests.get(c.gateway_url + "/_cluster/ring", headers=headers, timeout=10)
    assert r.status_code == 200
    ring = msgpack.unpackb(r.content, strict_map_key=False)
    assert sorted(n["url"] for n in ring["nodes"]) == sorted(c.urls)
    proc = admin(c, "status", "--json", url=c.gateway_url)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr
    assert status
