"""Blobs a crash left without a record (placed, then killed before the commit) are removed by the
services themselves: the single server once shortly after it starts, a node in its ``reclaim``
pass (right after start, then every ``--reclaim-interval``; tested in
tests/cluster/test_replaced_blobs.py).  Found by a soak: 12 kill -9 of a
server under uploads left 10 orphan blobs that nothing ever removed.  Real processes.
"""

import os

import requests

from filetracker.storage import ObjectStore
from tests.client.servers import OurServer
from tests.support.stores import orphan_blob
from tests.support.waiting import wait_until


def test_server_removes_orphan_blobs_after_start(tmp_path):
    data = str(tmp_path / "s")
    ObjectStore(data).close()
    orphan = orphan_blob(data, b"left by a crash")
    server = OurServer(data, tmp_path / "s.log").start()
    try:
        r = requests.put(server.url + "/files/kept", params={"last_modified": "Sat, 28 Nov 2026 00:00:00 GMT"},
                         data=b"a stored file", timeout=10)
        assert r.status_code == 200
        assert wait_until(lambda: not os.path.exists(orphan), timeout=15)
        assert requests.get(server.url + "/files/kept", timeout=10).content == b"a stored file"
    finally:
        server.stop()
    log = open(tmp_path / "s.log").read()
    assert "removed 1 orphan blobs (15 bytes) left by an earlier crash" in log, log
