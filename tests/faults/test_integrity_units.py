"""In-process checks of the integrity pieces on a real ObjectStore (no cluster):
the verified-blob LRU and its key, single flight, quarantine, the reserve guard (and, with an
in-process node, where the guard frees space)."""

import asyncio
import os
import threading
import time

import msgpack
import pytest
import requests

from cluster.node.app import make_app, make_server, shutdown
from cluster.node.config import NodeConfig
from cluster.node.integrity import BlobCorrupt, Integrity
from cluster.node.space import ReservedSpaceStore, SpaceGuard
from filetracker.storage import StoreFull
from tests.cluster.conftest import SECRET
from tests.faults.conftest import flip_byte
from tests.faults.conftest import store_put as put
from tests.support.procs import free_port

pytestmark = pytest.mark.faults


def test_lru_hashes_once_and_rehashes_a_changed_file(node):
    integ = Integrity(node)
    sha = put(node.store, "/a", b"x" * 300_000)
    with node.store.open_blob(sha) as f:
        assert integ.check(sha, f) is True           # hashed
        assert integ.check(sha, f) is False          # LRU
        assert integ.check(sha, f, force=True) is True
    st = os.stat(node.store.blob_path(sha))
    os.utime(node.store.blob_path(sha), ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    with node.store.open_blob(sha) as f:
        assert integ.check(sha, f) is True           # new mtime: hashed again
    assert integ.counters["verified"] == 3 and integ.counters["cache_hits"] == 1


def test_corrupt_blob_quarantined_and_queued(node):
    integ = Integrity(node)
    sha = put(node.store, "/a", b"y" * 100_000)
    flip_byte(node.store.blob_path(sha))
    with node.store.open_blob(sha) as f:
        with pytest.raises(BlobCorrupt) as e:
            integ.check(sha, f, name="/a")
    assert "checksum mismatch" in str(e.value)
    assert not node.store.has_blob(sha)
    assert [n.split(".")[0] for n in os.listdir(integ.quarantine_dir)] == [sha]
    assert integ.pending() == 1 and integ.wake.is_set()
    # no peer to repair from: it stays queued
    assert integ.repair_pending() == {"repaired": 0, "failed": 1, "pending": 1}
    # a restarted node queues the repairs of what is still quarantined and absent
    again = Integrity(node)
    assert again.requeue_quarantined() == 1 and again.pending() == 1
    put(node.store, "/b", b"y" * 100_000)          # the good bytes came back
    assert Integrity(node).requeue_quarantined() == 0


def test_single_flight(node):
    integ = Integrity(node)
    sha = put(node.store, "/big", os.urandom(8 << 20))
    results = []

    def read():
        with node.store.open_blob(sha) as f:
            results.append(integ.check(sha, f))

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert integ.counters["verified"] == 1 and sorted(results).count(True) == 1


def test_reserve_guard(node, tmp_path):
    guard = SpaceGuard(str(tmp_path), 1 << 60)
    store = ReservedSpaceStore(node.store, guard)
    with pytest.raises(StoreFull, match="--min-free-bytes"):
        store.begin_upload()
    assert os.listdir(os.path.join(str(tmp_path), "tmp")) == []
    free = guard.free_bytes()
    guard.min_free_bytes = max(1, free - (6 << 20))   # room for ~6 MiB more
    up = store.begin_upload()
    with pytest.raises(StoreFull):
        for _ in range(64):
            up.write(b"z" * (1 << 20))
    assert os.listdir(os.path.join(str(tmp_path), "tmp")) == []
    guard.min_free_bytes = 0
    sha = put(store, "/ok", b"fits")
    assert store.has_blob(sha) and guard.refused == 2


def test_reserve_guard_first_releases_retired_blobs(tmp_path):
    """Retired blobs (kept only for reads under way) give way before an upload is refused."""
    released = []
    guard = SpaceGuard(str(tmp_path), 1 << 60, release=lambda: released.append(1) or 0)
    with pytest.raises(StoreFull):
        guard.check()
    assert released == [1] and guard.refused == 1   # nothing was retired: refused as before

    def release():   # as if unlinking the retired blobs freed enough
        guard.min_free_bytes = 1
        return 3
    guard._release = release
    guard.check()
    assert guard.refused == 1


def test_large_blob_served_at_once_and_checked_in_background(node):
    integ = Integrity(node, read_verify_max=1 << 20)
    sha = put(node.store, "/huge", os.urandom(3 << 20))
    flip_byte(node.store.blob_path(sha))
    with node.store.open_blob(sha) as f:
        assert integ.check(sha, f, name="/huge") is False     # not waited for: served meanwhile
    deadline = time.monotonic() + 10
    while (node.store.has_blob(sha) or integ.pending() < 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not node.store.has_blob(sha) and integ.counters["corrupt"] == 1 and integ.pending() == 1
    good = put(node.store, "/huge2", os.urandom(3 << 20))
    with node.store.open_blob(good) as f:
        integ.check(good, f)
    deadline = time.monotonic() + 10
    while integ.counters["verified_after_serving"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    with node.store.open_blob(good) as f:
        assert integ.check(good, f) is False and integ.counters["cache_hits"] == 1
        with pytest.raises(BlobCorrupt):
            flip_byte(node.store.blob_path(good))
            integ.check(good, f, force=True)                # the scrubber ignores the size limit
    integ.close()


def test_a_node_frees_retired_blobs_on_a_disk_thread(tmp_path):
    """Below the reserve a node unlinks the retired blobs before refusing an upload.  The check ran
    in the handlers' prepare (a PUT) and per file of a batch, on the event loop, so unlinking
    thousands of big files stalled every request of the node.  Now only the statvfs runs there."""
    released = []

    async def main():
        config = NodeConfig(dir=str(tmp_path), node_id="http://127.0.0.1:1", cluster_secret=SECRET,
                            background=False, min_free_bytes=1 << 60, replicas=1)
        app = make_app(config)
        app.node.space._release = lambda: released.append(threading.get_ident()) or 0
        server = make_server(app, config)
        port = free_port()
        server.listen(port, "127.0.0.1")
        url = "http://127.0.0.1:%d/_cluster/" % port
        headers = {"X-Cluster-Secret": SECRET}

        def requests_():
            put = requests.put(url + "files/a?version=1", data=b"x" * 100, headers=headers, timeout=30)
            batch = requests.post(url + "store", data=msgpack.packb([{"name": "/b", "version": 1, "data": b"y"}]),
                                  headers=headers, timeout=30)
            return put, msgpack.unpackb(batch.content)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, requests_)
        finally:
            server.stop()
            shutdown(app)

    put, rows = asyncio.run(main())
    assert put.status_code == 507 and "--min-free-bytes" in put.headers["X-Exception"]
    assert rows[0][:2] == ["error", 507]
    assert len(released) == 2 and threading.get_ident() not in released   # not on the event loop's thread
