"""Membership changes from an operator review (a helper drove real clusters with real admins):

* two ``remove-node`` (or ``add-node``) at once wrote two different rings of one epoch, half
  the nodes each, which no command could mend; a resumed removal then went below N;
* ``add-node`` of a node from another cluster pulled that cluster's nodes and files in;
* a drain whose leaving node died counted its whole backlog as handed off.

Changes are now claimed on a coordinator first (``cluster/admin/draining.py``: ``claim``):
the second of two commands that read the same list is refused before it writes anything.

A second review found three ways round that claim, each tested here: a coordinator down for
one command and back for the other (two claims of one version, two rings of one epoch); a
command that read a claim but found the ring before it, and wrote its ring without the other
change's node (an ``add-node`` that said "added" and was not); an ``add-node`` interrupted
after writing its new node's ring, which ``status`` called agreed.
"""

import contextlib
import subprocess

import msgpack
import pytest

from cluster.admin.access import AdminError, ClusterAccess, NodeView
from cluster.admin.draining import claim, pending_claim, read
from cluster.admin.membership import remove_node
from cluster.admin.rebalance import pending, rebalance
from cluster.ring import Node, Ring
from tests.cluster.test_admin_support import admin, node_ring
from tests.support.procs import script

pytestmark = [pytest.mark.slow]


def rings(c, indexes):
    return [node_ring(c, i) for i in indexes]


def draining_doc(c, i):
    return msgpack.unpackb(c.client.request("GET", c.urls[i], "/_cluster/draining").content, raw=False)


@contextlib.contextmanager
def opened(c, seeds=None):
    """``(access, ring, leaving-members document)`` as a command reads them first."""
    access = ClusterAccess(seeds or c.urls[:1], secret=c.secret)
    try:
        ring, _ = access.discover()
        doc, _ = read(access, c.urls)
        yield access, ring, doc
    finally:
        access.close()


def admin_argv(c, *args):
    return [script("filetracker-admin"), "--cluster", c.urls[0], "--cluster-secret-file", c.secret_file, *args]


def test_a_claim_read_by_two_commands_is_taken_once_and_the_second_writes_nothing(cluster_factory):
    """The race itself, made deterministic: two commands read the same list, then claim."""
    c = cluster_factory(nodes=3)
    with opened(c) as (access, ring, doc):
        out = Lines()
        first = claim(access, out, doc, ring, "remove-node A", 2)
        with pytest.raises(AdminError, match="another membership change got there first"):
            claim(access, out, doc, ring, "remove-node B", 2)
        assert str(out) == ""
        # the first claim is on every node, the second on none
        assert [draining_doc(c, i) for i in range(3)] == [first] * 3
        assert first["change"] == {"what": "remove-node A", "epoch": 2} and first["version"] == doc["version"] + 1
        # a command that reads the list after the claim takes a higher epoch
        later, _ = read(access, c.urls)
        assert later == first


class Lines:
    def __init__(self):
        self.lines = []

    def write(self, text):
        self.lines.append(text)

    def __str__(self):
        return "".join(self.lines)


def test_a_claim_taken_by_another_coordinator_is_refused_and_withdrawn(cluster_factory):
    """The lowest member is down for the first command, which claims on the next one, and back for
    the second, which used to take the same version there: two rings of one epoch."""
    c = cluster_factory(nodes=3)
    with opened(c, seeds=c.urls) as (access, ring, doc):
        lowest = c.urls.index(min(ring.nodes, key=lambda n: n.id).url)
        c.stop_node(lowest)
        out = Lines()
        first = claim(access, out, doc, ring, "remove-node A", 2)
        assert "did not record the change" in str(out)
        c.restart(lowest)   # it comes back with the list it had: the version both commands read
        with pytest.raises(AdminError, match="another membership change got there first"):
            claim(access, Lines(), doc, ring, "remove-node B", 2)
        # the second claim, taken by the restarted node alone, was withdrawn: the first one's list,
        # one version up, is on every node, and it is what every reader takes
        held = [draining_doc(c, i) for i in range(3)]
        assert held == [dict(first, version=first["version"] + 1)] * 3, held
        assert read(access, c.urls)[0]["change"]["what"] == "remove-node A"


def interrupted_add(c, access, index):
    """An ``add-node`` of node ``index`` killed after its claim and its first ring write (the new node's)."""
    ring, _ = access.discover()
    doc, _ = read(access, [n.url for n in ring.nodes])
    node_id = access.client.status(c.urls[index])["id"]
    new = Ring(list(ring.nodes) + [Node(node_id, c.urls[index], 1)], epoch=ring.epoch + 1,
               replicas=ring.replicas, partition_power=ring.partition_power)
    claim(access, Lines(), doc, ring, "add-node %s" % node_id, new.epoch, also=[c.urls[index]],
          nodes=[n.url for n in new.nodes])
    assert access.put_ring(new, [c.urls[index]]) == {c.urls[index]: None}
    return new


@pytest.mark.parametrize("then", ["rebalance", "add-node"])
def test_a_change_claimed_and_not_written_everywhere_is_built_on_not_dropped(cluster_factory, then):
    c = cluster_factory(nodes=5, members=3)
    with opened(c) as (access, _, _):
        added = interrupted_add(c, access, 3)
    status = admin(c, "status")
    assert status.returncode == 1 and c.urls[3] in status.stdout, status.stdout   # it said agreed
    if then == "rebalance":   # finishes the addition: the ring the new node holds goes to every member
        r = admin(c, "rebalance")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert all(node_ring(c, i) == added for i in range(4))
        assert admin(c, "status").returncode == 0
    else:   # the next change plans on that ring: the old code wrote epoch 3 without node 3
        r = admin(c, "add-node", c.urls[4])
        assert r.returncode == 0, (r.stdout, r.stderr)
        final = node_ring(c, 0)
        assert final.epoch == added.epoch + 1 and sorted(n.url for n in final.nodes) == sorted(c.urls), final
        assert all(node_ring(c, i) == final for i in range(5))


def test_a_claim_whose_ring_never_shows_up_is_taken_for_interrupted(cluster_factory):
    c = cluster_factory(nodes=4)
    with opened(c) as (access, ring, doc):
        claim(access, Lines(), doc, ring, "remove-node gone", ring.epoch + 1)   # killed before any ring write
        out = Lines()
        assert remove_node(access, out, c.urls[3], wait=False, settle=0.5) == 0
        assert "remove-node gone claimed ring epoch 2, which no reachable node holds: taken for interrupted" \
            in str(out), str(out)
        # above the claimed epoch: the interrupted command, if it ever writes its ring, is refused
        assert node_ring(c, 0).epoch == 3 and len(node_ring(c, 0).nodes) == 3
        # rebalance re-issues the ring above such a claim, so later commands do not wait for it
        doc, _ = read(access, c.urls)
        claim(access, Lines(), doc, node_ring(c, 0), "add-node gone", 4)
        out = Lines()
        assert rebalance(access, out, settle=0.5, timeout=60) == 0
        assert "ring epoch 3 re-issued unchanged as epoch 5, above the interrupted add-node gone" in str(out)
        assert [node_ring(c, i).epoch for i in range(3)] == [5, 5, 5]
        assert not pending_claim(read(access, c.urls)[0], node_ring(c, 0))


def test_an_add_and_a_remove_at_once_lose_neither_change_they_report(cluster_factory):
    """A remove-node that read the add-node's claim but found the ring before it wrote its ring
    without the added node (the add-node had printed 'added': 2 of 4 runs)."""
    c = cluster_factory(nodes=5, members=4)
    procs = [subprocess.Popen(admin_argv(c, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in (("add-node", c.urls[4]), ("remove-node", c.urls[3], "--no-wait"))]
    (add_out, add_err, add_rc), (rm_out, rm_err, rm_rc) = [p.communicate(timeout=120) + (p.returncode,)
                                                           for p in procs]
    print(add_out, add_err, rm_out, rm_err)
    everyone = rings(c, range(5))
    final = max(everyone, key=lambda r: r.epoch)
    assert all(r.same_layout(final) for r in everyone if r.epoch == final.epoch), everyone
    members = [n.url for n in final.nodes]
    assert add_rc == 0 or rm_rc == 0
    if add_rc == 0:
        assert c.urls[4] in members, (final, add_out)
    if rm_rc == 0:
        assert c.urls[3] not in members, (final, rm_out)
    for out, err, rc in ((add_out, add_err, add_rc), (rm_out, rm_err, rm_rc)):
        if rc:
            assert "another membership change" in out + err, (out, err)


@pytest.mark.parametrize("command", ["remove-node", "add-node"])
def test_two_membership_commands_at_once_leave_one_agreed_ring(cluster_factory, command):
    c = cluster_factory(nodes=4 if command == "remove-node" else 5, members=4)   # N = 3
    targets = c.urls[2:4] if command == "remove-node" else c.urls[4:5] + c.urls[3:4]
    if command == "add-node":   # a second outsider: remove node 3 first (it is empty), to add both back
        assert admin(c, "remove-node", c.urls[3], "--allow-fewer-replicas").returncode == 0
    before = node_ring(c, 0).epoch
    procs = [subprocess.Popen(admin_argv(c, command, url, *(["--no-wait"] if command == "remove-node" else [])),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for url in targets]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    print(results)
    everyone = rings(c, range(len(c.urls)))
    newest = max(r.epoch for r in everyone)
    holders = [r for r in everyone if r.epoch == newest]
    assert newest > before
    assert all(r.same_layout(holders[0]) for r in holders), everyone   # never two rings of one epoch
    members = [n.url for n in holders[0].nodes]
    assert all(node_ring(c, c.urls.index(u)).epoch == newest for u in members), everyone
    assert len(members) >= 3, members   # never below N without --allow-fewer-replicas
    ok = [r for r in results if r[2] == 0]
    assert 1 <= len(ok) <= len(targets), results
    for out, err, rc in results:
        if rc:
            assert ("another membership change" in out + err or "refusing to remove" in err), (out, err)
    status = admin(c, "status")
    assert "not agreed" not in status.stdout + status.stderr


def test_add_node_refuses_a_node_of_another_cluster_and_a_node_with_files(cluster_factory):
    a = cluster_factory(nodes=3)
    b = cluster_factory(nodes=2, replicas=2)   # the same secret: the other cluster's nodes answer
    assert b.put(0, "/theirs/f", b"of cluster b", 1700000000).status_code == 200
    r = admin(a, "add-node", b.urls[0])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "is a member of another cluster" in r.stderr and b.urls[1] in r.stderr
    assert node_ring(a, 0).epoch == 1 and len(node_ring(a, 0).nodes) == 3
    assert [node_ring(b, i).epoch for i in range(2)] == [1, 1]
    lone = cluster_factory(nodes=1, replicas=1)
    assert lone.put(0, "/own/f", b"a file", 1700000000).status_code == 200
    r = admin(a, "add-node", lone.urls[0])
    assert r.returncode == 1 and "holds 1 files and tombstones of its own" in r.stderr, (r.stdout, r.stderr)
    assert node_ring(a, 0).epoch == 1
    # an empty node of its own is added as before
    empty = cluster_factory(nodes=1, replicas=1)
    r = admin(a, "add-node", empty.urls[0])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert len(node_ring(a, 0).nodes) == 4


def test_a_node_down_keeps_its_backlog_in_the_count():
    """``pending`` with the last-known counts: a drained node killed midway held 5,209 records
    and the drain said all of them had been handed off."""
    def view(url, up, pending_handoff=0, files=0, size=0):
        status = {"pending_handoff": pending_handoff, "files": files, "bytes": size} if up else None
        return NodeView(id=url, url=url, member=False, up=up, status=status)

    last = {}
    assert pending([view("a", True, 100, 200, 2000), view("b", True, 10, 10, 100)], last) == (110, 1100)
    assert pending([view("a", False), view("b", True, 0, 0, 0)], last) == (100, 1000)   # a: as last seen
    assert pending([view("a", True, 40, 40, 400), view("b", True)], last) == (40, 400)
    assert pending([view("a", False), view("b", True, 5, 5, 50)]) == (5, 50)   # without memory: up nodes only


def test_output_to_a_reader_gone_away_is_no_traceback(cluster_factory):
    """``filetracker-admin add-node URL | head -1`` ended in a BrokenPipeError traceback."""
    c = cluster_factory(nodes=4, members=3)
    proc = subprocess.Popen(admin_argv(c, "add-node", c.urls[3]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()   # the reader is gone before the command writes its first line
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(node_ring(c, 0).nodes) == 4   # the change itself was made


def test_remove_node_finds_a_member_under_another_spelling(cluster_factory):
    """``remove-node http://localhost:P`` said "not a member" for the member http://127.0.0.1:P
    (add-node already knew it by the id its status gives)."""
    c = cluster_factory(nodes=4)
    other = c.urls[3].replace("127.0.0.1", "localhost")
    r = admin(c, "remove-node", other, "--no-wait")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert [n.url for n in node_ring(c, 0).nodes] == sorted(c.urls[:3])
    r = admin(c, "remove-node", "http://localhost:1")   # nothing answers there: not a member, as before
    assert r.returncode == 1 and "is not a member" in r.stderr, r.stderr
