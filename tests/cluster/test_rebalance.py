"""Online rebalancing with ``filetracker-admin`` (issue 4, acceptance 1-5), real processes.

Nodes run without background loops (``--no-background``), so every movement
seen here is the one ``rebalance`` drives, and files written after a ring
change sit on the new owners only if the gateway placed them there.
"""

import re
import time

import pytest

from cluster.ring import moved_fraction
from tests.cluster.conftest import NodeCluster, wait_until
from tests.cluster.test_admin_support import (
    LoadLoop,
    admin,
    admin_background,
    content_of,
    holdings,
    node_ring,
    placement_errors,
    start_gateway,
    write_files,
)

pytestmark = [pytest.mark.slow]

FILES = 2000


@pytest.fixture
def grown(tmp_path):
    """3 running members + a gateway, and a 4th node started outside the ring (not yet added)."""
    c = NodeCluster(tmp_path, nodes=4, members=3)
    gateways = []
    try:
        for i in range(3):
            c.start_node(i)
        gw_svc, gw = start_gateway(c, c.urls[:3], "gw")
        gateways.append(gw_svc)
        c.gw = gw
        c.gateways = gateways
        yield c
    finally:
        for g in gateways:
            g.stop()
        c.stop()


def _fraction(stdout):
    m = re.search(r"fraction of data moving: ([0-9.]+)", stdout)
    return float(m.group(1)) if m else None


def test_add_node_rebalance_then_remove_node_under_load(grown):
    """Acceptance 1, 2, 5, then 3: add a 4th node and rebalance while a client reads and writes;
    then remove one of the 4 under the same load (one cluster, to keep the suite short)."""
    c = grown
    names = ["/data/f%04d" % i for i in range(FILES)]
    t0 = time.monotonic()
    write_files(c.gw, names)
    print("wrote %d files in %.1fs" % (FILES, time.monotonic() - t0))
    old_ring = node_ring(c, 0)
    # a second gateway that learns the (old) ring now and stays idle until the change is done
    gw2_svc, gw2 = start_gateway(c, c.urls[:3], "gw2")
    c.gateways.append(gw2_svc)
    assert c.client.request("GET", gw2, "/files" + names[0]).content == content_of(names[0])

    c.start_node(3)
    r = admin(c, "add-node", c.urls[3])
    assert r.returncode == 0, r.stderr
    new_ring = node_ring(c, 0)
    assert new_ring.epoch == old_ring.epoch + 1 and len(new_ring.nodes) == 4
    assert all(node_ring(c, i) == new_ring for i in range(4))
    ideal = moved_fraction(old_ring, new_ring)

    r = admin(c, "rebalance", "--dry-run")
    assert r.returncode == 0
    planned = _fraction(r.stdout)
    assert planned is not None and planned <= 1.25 * 0.25, r.stdout

    load = LoadLoop(c.gw, names).start()
    t0 = time.monotonic()
    try:
        time.sleep(0.5)
        r = admin(c, "rebalance")
        took = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        load.stop()
    print(load.summary())
    assert r.returncode == 0, r.stderr
    assert "balanced" in r.stdout
    assert not load.read_failures, load.read_failures[:10]
    assert load.acked

    # settle the writes made during the movement, then ask every node what it holds
    assert admin(c, "rebalance").returncode == 0
    held = holdings(c, range(4))
    everything = names + load.acked
    assert not placement_errors(new_ring, held, everything)
    stray = sorted(set(held) - set(everything))
    assert not stray, stray[:5]
    copies = sum(len(h) for h in held.values())
    on_new = sum(1 for n in names if c.urls[3] in held[n])
    measured = on_new / (len(names) * new_ring.n_replicas)
    print("FIGURES add-node: %d files, rebalance %.1fs under load, planned fraction %.4f, ring fraction %.4f, "
          "measured fraction of replica copies moved %.4f (ideal 0.25, limit %.4f), %d copies total"
          % (FILES, took, planned, ideal, measured, 1.25 * 0.25, copies))
    assert measured <= 1.25 * 0.25
    # every acknowledged write reads back byte-exact through the gateway
    for name in load.acked:
        assert c.client.request("GET", c.gw, "/files" + name).content == content_of(name)

    # acceptance 5: the idle gateway still holds epoch 1; it keeps serving and learns the new ring
    for name in names[:200]:
        assert c.client.request("GET", gw2, "/files" + name).content == content_of(name)
    late = ["/late/g%03d" % i for i in range(100)]

    def placed_by_new_ring():
        batch = [n + "-%d" % time.monotonic_ns() for n in late[:20]]
        write_files(gw2, batch, workers=4)
        held = holdings(c, range(4))
        return not placement_errors(new_ring, held, batch)
    assert wait_until(placed_by_new_ring, 15, interval=0.5), "gateway 2 never used the new ring"
    assert admin(c, "status").returncode == 0

    # acceptance 3: remove the first node (the gateways' first seed) under the same load
    everything = sorted(set(everything) | set(holdings(c, range(4))))
    load = LoadLoop(c.gw, everything, prefix="/load2").start()
    t0 = time.monotonic()
    try:
        time.sleep(0.5)
        r = admin(c, "remove-node", c.urls[0])
        took = time.monotonic() - t0
    finally:
        load.stop()
    print(load.summary())
    assert r.returncode == 0, r.stderr
    assert "holds nothing now" in r.stdout
    assert not load.read_failures, load.read_failures[:10]
    assert admin(c, "rebalance").returncode == 0
    final = node_ring(c, 1)
    assert [n.url for n in final.nodes] == sorted(c.urls[1:]) and final.epoch == new_ring.epoch + 1
    assert not c.listing(0), "the removed node still holds data"
    c.stop_node(0)
    held = holdings(c, range(1, 4))
    everything += load.acked
    errors = placement_errors(final, held, everything)
    assert not errors, errors[:5]
    assert all(len(held[n]) == 3 for n in everything)
    print("FIGURES remove-node: %d files back at 3 replicas on the remaining 3 nodes, drained in %.1fs under "
          "load; removed node empty and stopped" % (len(everything), took))
    for name in everything[::7]:
        assert c.client.request("GET", c.gw, "/files" + name).content == content_of(name)
    r = admin(c, "status", url=c.urls[1])
    assert r.returncode == 0 and c.urls[0] not in r.stdout


@pytest.mark.faults
def test_interrupted_rebalance_converges(grown):
    """Acceptance 4: kill the admin mid-move, then kill -9 a node mid-move and restart it;
    running ``rebalance`` again converges with nothing lost and nothing beyond N copies."""
    c = grown
    names = ["/int/f%04d" % i for i in range(800)]
    write_files(c.gw, names)
    c.start_node(3)
    assert admin(c, "add-node", c.urls[3]).returncode == 0
    ring = node_ring(c, 0)
    expected_on_new = sum(1 for n in names if ring.node(c.urls[3]) in ring.owners(n))

    a = admin_background(c, "rebalance", log_name="admin1.log")
    assert wait_until(lambda: c.status(3)["files"] > 0, 60, interval=0.05), a.log_tail()
    a.kill9()
    at_admin_kill = c.status(3)["files"]

    a = admin_background(c, "rebalance", "--down-timeout", "60", log_name="admin2.log")
    assert wait_until(lambda: c.status(3)["files"] > at_admin_kill + 5, 60, interval=0.05), a.log_tail()
    c.kill9(1)
    at_node_kill = c.status(3)["files"]
    time.sleep(1.0)
    c.start_node(1)
    rc = a.proc.wait(180)
    print("admin 2 (node 1 killed and restarted under it) -> %d\n%s" % (rc, a.log_tail(1500)))

    r = admin(c, "rebalance")
    assert r.returncode == 0, r.stderr
    held = holdings(c, range(4))
    errors = placement_errors(ring, held, names)
    assert not errors, errors[:5]
    assert set(held) == set(names)
    assert sum(len(h) for h in held.values()) == len(names) * 3
    print("FIGURES interrupt: new node held %d/%d of its copies when the admin was killed, %d when node 1 "
          "was killed; converged to exactly 3 copies of all %d files" % (
              at_admin_kill, expected_on_new, at_node_kill, len(names)))
    assert at_admin_kill < expected_on_new and at_node_kill < expected_on_new
    for name in names[::5]:
        assert c.client.request("GET", c.gw, "/files" + name).content == content_of(name)
