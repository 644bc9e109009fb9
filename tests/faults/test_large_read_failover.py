"""A large GET through the gateway survives the death of the replica it is reading from.

The gateway sends the first piece of a large body, then relays the rest from
the same holder as it arrives (``cluster/gateway/handlers.py``): when that
node is killed mid-download, the rest is asked from another holder with a
Range starting at the byte reached, and the client gets every byte, in
order, with nothing doubled or skipped.
"""

import hashlib
import os
import re

import pytest
import requests

from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date
from tests.support.waiting import wait_until

SIZE = 40 << 20  # a first piece of 4 MiB, then 36 MiB relayed
BLOB_SERIES = re.compile(r'^filetracker_http_requests_total\{method="GET",route="_cluster/blobs",status="20[06]"\} (\S+)$',
                         re.M)


def blob_reads(url):
    """How many ``GET /_cluster/blobs`` the node at ``url`` answered (its /metrics)."""
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(float(v) for v in BLOB_SERIES.findall(text))


@pytest.mark.faults
def test_large_get_continues_from_another_replica_when_its_node_dies(tmp_path):
    # --no-background: an anti-entropy pull of the blob is a GET /_cluster/blobs too, which the
    # count of serving nodes below would take for the gateway's read (the third replica comes
    # from the gateway's own upload, not from a sync pass)
    c = TestCluster(tmp_path, nodes=3, node_args=["--no-background"], gateway_args=["--timeout", "2"]).start()
    try:
        data = os.urandom(SIZE)
        r = requests.put(c.gw + "/files/big/one", params={"last_modified": http_date(BASE_VERSION)}, data=data,
                         timeout=60)
        assert r.status_code == 200, r.text
        # acknowledged at W=2: wait for the third replica, or the node read from could be the
        # only holder the gateway knows of, and nobody would be left to continue after its death
        assert wait_until(lambda: all(c.node_record(u, "/big/one") for u in c.node_urls), 30)
        before = [blob_reads(u) for u in c.node_urls]
        with requests.get(c.gw + "/files/big/one", stream=True, timeout=30) as r:
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == SIZE
            got = hashlib.sha256()
            received = 0
            chunks = r.iter_content(256 * 1024)
            while received < (1 << 20):  # the first MiB: the gateway is now relaying from one node
                chunk = next(chunks)
                got.update(chunk)
                received += len(chunk)
            serving = [i for i, u in enumerate(c.node_urls) if blob_reads(u) > before[i]]
            assert len(serving) == 1, serving
            c.nodes[serving[0]].kill9()
            for chunk in chunks:
                got.update(chunk)
                received += len(chunk)
        assert received == SIZE
        assert got.hexdigest() == hashlib.sha256(data).hexdigest()
        others = [i for i in range(3) if i != serving[0]]
        assert any(blob_reads(c.node_urls[i]) > before[i] for i in others), "no other replica served the rest"
    finally:
        c.stop()
