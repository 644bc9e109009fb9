"""Resuming an interrupted ``remove-node`` without ``--drain`` (issue 4): the nodes persist the
leaving members, so a plain re-run finishes the drain with nothing lost.  Real processes.

Nodes run with ``--no-background``: nothing moves unless the admin drives it, so
whatever the killed admin left undone really is left undone.
"""

import json
import time

import msgpack
import pytest

from cluster.ring import Ring
from tests.cluster.conftest import NodeCluster, wait_until
from tests.cluster.test_admin_support import (
    admin,
    admin_background,
    content_of,
    holdings,
    node_ring,
    placement_errors,
    start_gateway,
    write_files,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults]

FILES = 600


def draining_doc(c, i):
    return msgpack.unpackb(c.client.request("GET", c.urls[i], "/_cluster/draining").content, raw=False)


def status_json(c, url):
    r = admin(c, "status", "--json", url=url)
    return r.returncode, json.loads(r.stdout)


@pytest.fixture
def four(tmp_path):
    c = NodeCluster(tmp_path, nodes=4)
    gw = None
    try:
        c.start()
        gw, c.gw = start_gateway(c, c.urls[:3], "gw")
        yield c
    finally:
        if gw is not None:
            gw.stop()
        c.stop()


def test_interrupted_remove_node_resumes_without_drain_option(four):
    c = four
    names = ["/res/f%04d" % i for i in range(FILES)]
    write_files(c.gw, names)
    before = node_ring(c, 0)
    held_by_leaving = c.status(3)["files"]
    assert held_by_leaving > 0

    # 1. remove-node, killed with -9 once the ring change reached the leaving node (mid-drain)
    a = admin_background(c, "remove-node", c.urls[3], log_name="admin-remove.log")
    assert wait_until(lambda: node_ring(c, 3).epoch > before.epoch, 30, interval=0.02), a.log_tail()
    wait_until(lambda: c.status(3)["files"] < held_by_leaving, 10, interval=0.01)  # mid-drain if we can
    a.kill9()
    at_kill = c.status(3)["files"]
    removed = node_ring(c, 0)
    assert [n.url for n in removed.nodes] == sorted(c.urls[:3])
    # every node persisted the leaving member
    for i in range(4):
        doc = draining_doc(c, i)
        assert [m["url"] for m in doc["members"]] == [c.urls[3]], (i, doc)

    # 2. restart a member and kill -9 + restart the leaving node: both come back knowing it
    c.restart(1)
    c.kill9(3)
    c.start_node(3)
    assert [m["url"] for m in draining_doc(c, 1)["members"]] == [c.urls[3]]
    assert [m["url"] for m in draining_doc(c, 3)["members"]] == [c.urls[3]]

    # 3. status shows it as leaving, without --drain
    rc, doc = status_json(c, c.urls[0])
    leaving = [n for n in doc["nodes"] if n["url"] == c.urls[3]]
    assert leaving and leaving[0]["leaving"] and not leaving[0]["member"] and leaving[0]["up"], doc
    r = admin(c, "status")
    assert "(leaving)" in r.stdout

    # 4. a plain rebalance finishes the drain
    t0 = time.monotonic()
    r = admin(c, "rebalance")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "holds nothing now" in r.stdout and "no longer listed as leaving" in r.stdout, r.stdout
    assert not c.listing(3), "the removed node still holds data"
    assert all(draining_doc(c, i)["members"] == [] for i in range(4))
    held = holdings(c, range(3))
    assert not placement_errors(removed, held, names)
    assert set(held) == set(names) and all(len(held[n]) == 3 for n in names)
    for name in names[::9]:
        assert c.client.request("GET", c.gw, "/files" + name).content == content_of(name)
    rc, doc = status_json(c, c.urls[0])
    assert rc == 0 and all(n["url"] != c.urls[3] for n in doc["nodes"])
    print("FIGURES resume: leaving node held %d records, %d when the admin was killed; plain rebalance "
          "finished the drain in %.1fs; %d files at 3 replicas on 3 nodes" % (held_by_leaving, at_kill, took, FILES))

    # 5. killed between recording the leaving member and writing the ring: the intent alone is
    # enough, but finishing it here would leave 2 nodes for N=3: a plain rebalance refuses
    # (it wrote that ring without asking), remove-node --allow-fewer-replicas finishes it
    c.stop_node(3)
    doc = {"version": draining_doc(c, 0)["version"] + 1,
           "members": [{"id": c.urls[2], "url": c.urls[2]}]}
    for i in range(3):
        c.client.request("PUT", c.urls[i], "/_cluster/draining", data=msgpack.packb(doc))
    r = admin(c, "rebalance")
    assert r.returncode == 1 and "would leave 2 nodes for N=3" in r.stderr, (r.stdout, r.stderr)
    assert node_ring(c, 0) == removed
    r = admin(c, "remove-node", c.urls[2], "--allow-fewer-replicas")
    assert r.returncode == 0, r.stderr
    assert "warning: 2 nodes left for N=3" in r.stdout and "no longer listed as leaving" in r.stdout, r.stdout
    final = node_ring(c, 0)
    assert isinstance(final, Ring) and [n.url for n in final.nodes] == sorted(c.urls[:2])
    assert final.epoch == removed.epoch + 1 and node_ring(c, 2) == final
    assert not c.listing(2)
    held = holdings(c, range(2))
    assert set(held) == set(names) and all(len(held[n]) == 2 for n in names)


def test_remove_node_again_resumes(four):
    """``remove-node URL`` of a member already leaving resumes instead of failing."""
    c = four
    names = ["/again/f%03d" % i for i in range(100)]
    write_files(c.gw, names)
    r = admin(c, "remove-node", c.urls[3], "--no-wait")
    assert r.returncode == 0, r.stderr
    assert [m["url"] for m in draining_doc(c, 0)["members"]] == [c.urls[3]]
    r = admin(c, "verify")   # the leaving member is checked too, without --drain
    assert r.stdout.count("records checked against their blobs") == 4, r.stdout
    r = admin(c, "remove-node", c.urls[3])
    assert r.returncode == 0, r.stderr
    assert "already leaving" in r.stdout and "holds nothing now" in r.stdout
    assert not c.listing(3)
    assert draining_doc(c, 0)["members"] == []
    r = admin(c, "remove-node", c.urls[3])
    assert r.returncode == 1 and "not a member" in r.stderr


def test_remove_node_of_a_dead_leaving_node_forgets_it(four):
    """The leaving node died before it drained: ``remove-node URL`` again stops waiting for it, and
    ``rebalance`` rebuilds its partitions from the other replicas (N=3), nothing lost."""
    c = four
    names = ["/dead/f%03d" % i for i in range(100)]
    write_files(c.gw, names)
    r = admin(c, "rebalance", "--dry-run")
    assert r.returncode == 0
    r = admin(c, "remove-node", c.urls[3], "--no-wait")
    assert r.returncode == 0, r.stderr
    c.kill9(3)
    r = admin(c, "status")
    assert "(leaving)" in r.stdout and "DOWN" in r.stdout
    r = admin(c, "remove-node", c.urls[3])
    assert r.returncode == 0, r.stderr
    assert "unreachable" in r.stdout and "no longer listed as leaving" in r.stdout
    assert draining_doc(c, 0)["members"] == []
    r = admin(c, "rebalance")
    assert r.returncode == 0, r.stderr
    ring = node_ring(c, 0)
    held = holdings(c, range(3))
    assert not placement_errors(ring, held, names)
    assert set(held) == set(names) and all(len(held[n]) == 3 for n in names)
    rc, doc = status_json(c, c.urls[0])
    assert rc == 0 and all(n["url"] != c.urls[3] for n in doc["nodes"])


def test_dry_run_does_not_spread_a_newer_ring(four):
    """A ring newer than the others' on one node (an add-node killed after its first ring write):
    ``rebalance --dry-run`` gave it to the other members, which then moved data."""
    c = four
    before = node_ring(c, 1)
    newer = before.with_changes()   # the same members, one epoch up
    r = c.client.request("PUT", c.urls[0], "/_cluster/ring", data=msgpack.packb(newer.to_dict()))
    assert r.status_code == 200
    r = admin(c, "rebalance", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would give ring epoch %d to " % newer.epoch in r.stdout, r.stdout
    assert [node_ring(c, i).epoch for i in range(4)] == [newer.epoch] + [before.epoch] * 3


def test_dry_run_changes_nothing(four):
    """An intent recorded but no ring written: ``rebalance --dry-run`` only says what it would do."""
    c = four
    before = node_ring(c, 0)
    doc = {"version": 1, "members": [{"id": c.urls[3], "url": c.urls[3]}]}
    for i in range(4):
        c.client.request("PUT", c.urls[i], "/_cluster/draining", data=msgpack.packb(doc))
    r = admin(c, "rebalance", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would finish the interrupted removal" in r.stdout
    assert all(node_ring(c, i) == before for i in range(4))
    assert draining_doc(c, 0) == doc
    r = admin(c, "status")
    assert r.stdout.count("(leaving)") == 1
