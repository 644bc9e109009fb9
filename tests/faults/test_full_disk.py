"""Full disk: a node whose filesystem fills answers 507 with a message, keeps serving reads,
keeps nothing partial, and the gateway still acknowledges writes the other replicas took.

``test_real_full_filesystem`` puts one node's data folder on its own small tmpfs
(``mount -t tmpfs -o size=16m``, root only; unmounted at teardown) and fills it
with a ballast file, so the node meets a real ENOSPC.  Where mounting is not
permitted it falls back to the node-level reserve (``--min-free-bytes`` larger
than the free space) and says so.  ``test_reserved_space`` checks the reserve
on its own: writes refused before the disk is touched, reads and deletes served.
"""

import os
import subprocess

import pytest
import requests

from tests.cluster.test_admin_support import admin
from tests.faults.conftest import NodeCluster, figures, gw_put, tmp_files

pytestmark = pytest.mark.faults

BASE = 1795550400
KiB = 1024


def _try_mount(path, size="16m"):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0


def _fill(path):
    """Write a ballast file until ENOSPC; returns its path."""
    ballast = os.path.join(path, "ballast")
    chunk = b"\0" * (64 * KiB)
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    # the last partial chunk may still sit in the buffer: push byte-sized writes until refused
    with open(ballast, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return ballast


def test_real_full_filesystem(tmp_path):
    c = NodeCluster(tmp_path, nodes=3, gateway=True, gateway_args=["--timeout", "3"])
    full = 2
    mounted = _try_mount(c.dirs[full])
    method = "tmpfs (real ENOSPC)" if mounted else "fallback: --min-free-bytes above the free space"
    print("\nfull-disk method: %s" % method)
    if mounted:
        c.node_args = []
        # node args are global to the cluster: give the full node no reserve via a per-node hook
        orig = c.node_argv
        c.node_argv = lambda i: orig(i) + (["--min-free-bytes", "0"] if i == full else [])
    try:
        c.start()
        gw = c.gateway_url
        before = {"/disk/pre%d" % i: os.urandom(50 * KiB) for i in range(5)}
        for n, (name, data) in enumerate(before.items()):
            assert gw_put(gw, name, data, BASE + n).status_code == 200
        if mounted:
            ballast = _fill(c.dirs[full])
        else:
            c.stop_node(full)
            orig = c.node_argv
            c.node_argv = lambda i: orig(i) + (["--min-free-bytes", str(1 << 60)] if i == full else [])
            c.start_node(full)
        # writes through the gateway: acknowledged by the two others; the full node answers 507
        acked = {}
        during = {"/disk/new%d" % i: os.urandom(200 * KiB + i) for i in range(12)}
        for n, (name, data) in enumerate(during.items()):
            r = gw_put(gw, name, data, BASE + 100 + n)
            assert r.status_code == 200, r.headers
            acked[name] = data
        r = c.put(full, "/disk/direct", os.urandom(300 * KiB), BASE + 200)
        assert r.status_code == 507 and "no space" in r.headers["X-Exception"], (r.status_code, r.headers)
        # nothing partial: no temp file, no record of a refused write; reads still served
        assert tmp_files(c, full) == []
        assert c.record(full, "/disk/direct") is None
        assert all(c.record(full, n) is None for n in during)
        for name, data in before.items():
            assert c.content(full, name) == data
            r = requests.get(gw + "/files" + name, timeout=30)
            assert r.status_code == 200 and r.content == data
        for name, data in acked.items():
            r = requests.get(gw + "/files" + name, timeout=30)
            assert r.status_code == 200 and r.content == data
        status = c.status(full)
        assert status["files"] == len(before)
        # a delete needs a record commit (SQLite WAL) on the full disk: done, or 507 with nothing changed
        r = c.delete(full, "/disk/pre4", BASE + 300)
        print("delete on the full disk: %d %s" % (r.status_code, r.headers.get("X-Exception", "")))
        assert r.status_code in (200, 507), r.headers
        if r.status_code == 507:
            assert not c.record(full, "/disk/pre4").deleted
        before.pop("/disk/pre4")
        # space comes back: anti-entropy fills the gap
        if mounted:
            os.unlink(ballast)
        else:
            c.stop_node(full)
            c.node_argv = orig
            c.start_node(full)
        for i in range(3):
            c.run(i, "sync")
        for name, data in acked.items():
            assert c.content(full, name) == data
        assert tmp_files(c, full) == []
        assert admin(c, "verify").returncode == 0
        figures("full disk (%s)" % ("tmpfs" if mounted else "reserve"), cases=len(during) + 1 + len(before),
                faults=1, acked_checked=len(acked) + len(before))
    finally:
        c.stop()
        if mounted:
            subprocess.run(["umount", c.dirs[full]], check=False)


def test_reserved_space(tmp_path):
    c = NodeCluster(tmp_path, nodes=3, gateway=True)
    orig = c.node_argv
    c.node_argv = lambda i: orig(i) + (["--min-free-bytes", str(1 << 60)] if i == 0 else [])
    try:
        c.start()
        _reserved_space(c)
    finally:
        c.stop()


def _reserved_space(c):
    pre = os.urandom(10 * KiB)
    # direct: refused before the body is read (Content-Length) and when the length is unknown
    r = c.put(0, "/res/a", pre, BASE)
    assert r.status_code == 507 and "--min-free-bytes" in r.headers["X-Exception"]
    r = c.put(0, "/res/a", iter([pre]), BASE)             # chunked: refused at begin_upload
    assert r.status_code == 507
    assert tmp_files(c, 0) == [] and c.record(0, "/res/a") is None
    # through the gateway: acknowledged by the others
    assert gw_put(c.gateway_url, "/res/a", pre, BASE).status_code == 200
    assert requests.get(c.gateway_url + "/files/res/a", timeout=10).content == pre
    # deletes (tiny records) are not refused
    assert c.delete(0, "/res/a", BASE + 1).status_code == 200
    figures("reserved space", cases=4, faults=1, acked_checked=1)


def test_reserve_holds_during_a_streamed_upload(tmp_path):
    """The reserve is checked while a body is written, not only when the upload starts: a
    node on a 64 MiB tmpfs keeping 40 MiB free refuses a 48 MiB chunked upload (no
    Content-Length to refuse it by) half-way, with 507 and no temp file left."""
    c = NodeCluster(tmp_path, nodes=1, replicas=1)
    if not _try_mount(c.dirs[0], size="64m"):
        pytest.skip("needs root to mount a small tmpfs")
    orig = c.node_argv
    c.node_argv = lambda i: orig(i) + ["--min-free-bytes", str(40 << 20)]
    try:
        c.start()
        piece = os.urandom(1 << 20)
        r = c.put(0, "/res/big", (piece for _ in range(48)), BASE)
        assert r.status_code == 507 and "--min-free-bytes" in r.headers["X-Exception"], (r.status_code, r.headers)
        assert tmp_files(c, 0) == [] and c.record(0, "/res/big") is None
        # a body that fits the room above the reserve is stored
        r = c.put(0, "/res/small", (piece for _ in range(4)), BASE)
        assert r.status_code == 200 and c.content(0, "/res/small") == piece * 4
        figures("reserved space", cases=2, faults=1, acked_checked=1)
    finally:
        c.stop()
        subprocess.run(["umount", c.dirs[0]], check=False)
