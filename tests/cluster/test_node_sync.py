"""Background work of real nodes: anti-entropy, handoff, ring changes, catching up after kill -9."""

import os
import time

import msgpack
import pytest

from cluster.node.app import make_app, shutdown
from cluster.node.config import NodeConfig
from cluster.node.fastpath import store_small
from cluster.node.tasks import AntiEntropy, Handoff
from cluster.peers import PeerClient, PeerError
from cluster.ring import Node, partition_of
from tests.cluster.conftest import SECRET, sha256, wait_until

V = 1795550400


def names_owned_by(ring, owner_ids, count, exclude=(), prefix="/h/f"):
    """``count`` names whose owner set is exactly ``owner_ids`` (and excludes ``exclude``)."""
    out = []
    i = 0
    while len(out) < count:
        name = "%s%d" % (prefix, i)
        owners = {n.id for n in ring.owners(name)}
        if owners == set(owner_ids) and not owners & set(exclude):
            out.append(name)
        i += 1
    return out


def all_rounds(cl, rounds, nodes=None):
    for _ in range(rounds):
        for i in nodes if nodes is not None else range(len(cl.urls)):
            cl.run(i, "all")


def test_anti_entropy_push_and_pull(cluster_factory):
    cl = cluster_factory(nodes=3, replicas=3)
    a, b = os.urandom(5000), os.urandom(7000)
    assert cl.put(0, "/ae/a", a, V).status_code == 200       # only on node 0
    assert cl.put(1, "/ae/b", b, V).status_code == 200       # only on node 1
    assert cl.delete(2, "/ae/t", V).status_code == 200       # a tombstone only on node 2
    out = cl.run(0)["sync"]
    assert out["differing"] >= 2 and out["pulled"] >= 2 and out["pushed"] >= 1, out
    # node 0 pushed /ae/a to both peers and pulled /ae/b and the tombstone
    for i in range(3):
        assert cl.record(i, "/ae/a").sha256 == sha256(a)
        assert cl.content(i, "/ae/a") == a
    assert cl.record(0, "/ae/b").sha256 == sha256(b) and cl.record(0, "/ae/t").deleted
    cl.run(1)
    cl.run(2)
    listings = [cl.listing(i) for i in range(3)]
    assert listings[0] == listings[1] == listings[2] and len(listings[0]) == 3
    # a converged cluster finds nothing to do
    out = cl.run(2)["sync"]
    assert out["differing"] == 0 and out["pulled"] == out["pushed"] == 0


def test_anti_entropy_applies_the_merge_rule(cluster_factory):
    cl = cluster_factory(nodes=3, replicas=3)
    old, new, tie_a, tie_b = b"old", b"new", b"tie-a", b"tie-b"
    cl.put(0, "/m/ver", old, V)
    cl.put(1, "/m/ver", new, V + 10)
    cl.put(0, "/m/tie", tie_a, V)
    cl.put(1, "/m/tie", tie_b, V)
    cl.put(0, "/m/del", b"data", V + 5)
    cl.delete(2, "/m/del", V + 5)               # tombstone beats data at equal version
    cl.put(2, "/m/late", b"late", V)
    cl.delete(1, "/m/late", V + 1)              # a delete not undone by an older write
    all_rounds(cl, 2)
    winner_tie = max(sha256(tie_a), sha256(tie_b))
    for i in range(3):
        assert cl.record(i, "/m/ver").version == V + 10 and cl.content(i, "/m/ver") == new
        assert cl.record(i, "/m/tie").sha256 == winner_tie
        assert cl.record(i, "/m/del").deleted and cl.record(i, "/m/late").deleted


def test_handoff_moves_hint_to_owners_and_drops_it(cluster_factory):
    cl = cluster_factory(nodes=4, replicas=2)
    ring = cl.ring
    owners = sorted(cl.urls[:2])
    names = names_owned_by(ring, owners, 5)
    # node 3 took hinted writes for those names (their owners are nodes 0 and 1)
    payload = {n: os.urandom(1000 + k) for k, n in enumerate(names)}
    for n, data in payload.items():
        assert cl.put(3, n, data, V, **{"X-Hint-For": owners[0]}).headers["X-Applied"] == "1"
    cl.delete(3, names[0], V + 1)
    assert cl.status(3)["pending_handoff"] == 5
    # an owner is down: hints are pushed to the live one but kept
    cl.stop_node(1)
    out = cl.run(3, "handoff")["handoff"]
    assert out["dropped"] == 0 and out["kept"] == 5, out
    assert cl.record(0, names[1]).sha256 == sha256(payload[names[1]])
    cl.restart(1)
    out = cl.run(3, "handoff")["handoff"]
    assert out["dropped"] == 5, out
    assert cl.listing(3) == {}
    assert cl.status(3)["pending_handoff"] == 0
    for n in names[1:]:
        for i in (0, 1):
            assert cl.content(i, n) == payload[n]
        assert cl.record(2, n) is None
    assert cl.record(0, names[0]).deleted and cl.record(1, names[0]).deleted


def test_ring_change_moves_data_and_spreads_by_gossip(cluster_factory):
    # a 3-node cluster; node 3 runs but is not a member of their ring yet
    cl = cluster_factory(nodes=4, replicas=2, members=3)
    old = cl.client.get_ring(cl.urls[0])
    assert len(old.nodes) == 3
    files = {"/rb/f%03d" % k: os.urandom(200) for k in range(60)}
    for n, data in files.items():
        for owner in old.owners(n):
            cl.put(cl.urls.index(owner.id), n, data, V)
    new = old.with_changes(add=[Node(cl.urls[3], cl.urls[3])])
    assert cl.client.put_ring(cl.urls[0], new)           # only node 0 hears of it
    all_rounds(cl, 3)
    for i in range(4):
        assert cl.client.get_ring(cl.urls[i]) == new, i
    held = [cl.listing(i) for i in range(4)]
    moved = 0
    for n in files:
        owners = {o.id for o in new.owners(n)}
        holders = {cl.urls[i] for i in range(4) if n in held[i]}
        assert holders == owners, (n, holders, owners)
        moved += cl.urls[3] in owners
    assert 0 < moved < len(files)


@pytest.mark.faults
def test_killed_node_catches_up_by_itself(cluster_factory):
    cl = cluster_factory(nodes=3, replicas=3, sync_interval=0.5)
    before = {"/k/old%02d" % k: os.urandom(300) for k in range(20)}
    for n, data in before.items():
        for i in range(3):
            cl.put(i, n, data, V)
    cl.kill9(2)
    # writes and deletes that reach only the two live replicas (as a W=2 gateway would)
    during = {"/k/new%02d" % k: os.urandom(300) for k in range(40)}
    for n, data in during.items():
        for i in (0, 1):
            assert cl.put(i, n, data, V + 1).status_code == 200
    for n in list(before)[:5]:
        for i in (0, 1):
            cl.delete(i, n, V + 2)
    expected = cl.listing(0)
    assert wait_until(lambda: cl.listing(1) == expected, 30)
    started = time.monotonic()
    cl.restart(2)
    assert wait_until(lambda: cl.listing(2) == expected, 60, interval=0.5), cl.logs()
    took = time.monotonic() - started
    print("killed node caught up %d records in %.1f s" % (len(expected), took))
    for n, data in during.items():
        assert cl.content(2, n) == data
    assert cl.record(2, "/k/old00").deleted


def _node0_in_this_process(cl, replicas=2):
    """Stop node 0 of a 2-node cluster and run it in the test process instead (same data
    folder, same ring, no background loops): its app (``shutdown(app)`` at the end)."""
    cl.stop_node(0)
    return make_app(NodeConfig(dir=cl.dirs[0], node_id=cl.urls[0], peers=(cl.urls[1],), replicas=replicas,
                               cluster_secret=SECRET, background=False))


def _node0_holding_hints(cl, names):
    """Node 0 of a 2-node cluster in this process (:func:`_node0_in_this_process`, one replica)
    holding a record of each of ``names`` (hints, when node 1 owns them)."""
    app = _node0_in_this_process(cl, replicas=1)
    try:
        for n in names:
            store_small(app.node.store, n.encode(), n, V, None, None)
    except BaseException:
        shutdown(app)
        raise
    return app


def _close(app, *parts):
    """Close the tasks and peer clients of a test (those made: None is skipped), then ``app``."""
    for part in parts:
        if part is not None:
            part.close()
    shutdown(app)


class _WriteBetweenRounds(PeerClient):
    """A real peer client that runs ``hook`` once, before its second digests request (the
    first comparison is done by then): a write landing between anti-entropy's two comparisons."""

    def __init__(self, hook, **kwargs):
        super().__init__(**kwargs)
        self.hook = hook
        self.digest_requests = 0
        self.listed = []

    def digests(self, url):
        self.digest_requests += 1
        if self.digest_requests == 2:
            self.hook()
        return super().digests(url)

    def partition_records(self, url, partition):
        self.listed.append(partition)
        return super().partition_records(url, partition)

    def partitions_records(self, url, partitions):
        self.listed.extend(partitions)
        return super().partitions_records(url, partitions)


def test_anti_entropy_leaves_a_settled_difference_alone(cluster_factory, tmp_path):
    """A partition that differs at the first comparison only (a write was in flight) is not
    reconciled; one that still differs is.  Node 0 runs in this process (same data folder,
    same ring) so the test can land a write between the two comparisons."""
    cl = cluster_factory(nodes=2, replicas=2)
    late, real = "/ae/late", "/ae/real"
    p_late, p_real = (partition_of(n, 10) for n in (late, real))
    assert p_late != p_real
    assert cl.put(1, late, b"late", V).status_code == 200     # on node 1 only, for now
    assert cl.put(1, real, b"real", V).status_code == 200     # on node 1 only
    client = sync = None
    app = _node0_in_this_process(cl)
    try:
        store = app.node.store
        client = _WriteBetweenRounds(lambda: store_small(store, b"late", late, V, None, None),
                                     secret=SECRET, timeout=30)
        sync = AntiEntropy(app.node, client, 30)
        out = sync.run_once()
        assert (out["differing"], out["transient"], out["pulled"], out["pushed"]) == (1, 1, 1, 0), out
        assert client.listed == [p_real]                       # the settled partition: no record list
        assert store.get_record(real).sha256 == sha256(b"real")
        assert sync.run_once()["differing"] == 0
    finally:
        if sync is not None:
            sync.close()  # its worker threads
        _close(app, client)


class _CountingPeer(PeerClient):
    """A real peer client counting its requests by kind; with ``old="all"`` it answers as a
    node from before the batch endpoints would (404 for ``POST /_cluster/partitions`` and
    ``POST /_cluster/read``, inline content ignored); with ``old="inline"`` only the inline
    content is ignored; with ``old="capped"`` record lists come one partition per answer."""

    def __init__(self, old=False, **kwargs):
        super().__init__(**kwargs)
        self.old = old
        self.calls = {}

    def _count(self, kind):
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def partitions_records(self, url, partitions):
        self._count("partitions_records")
        if self.old == "all":
            raise PeerError("POST %s/_cluster/partitions: 404" % url, url=url, status=404)
        got = super().partitions_records(url, partitions)
        if self.old == "capped":  # as a node answers when the first partition is already large
            return {partitions[0]: got[partitions[0]]}
        return got

    def partition_records(self, url, partition):
        self._count("partition_records")
        return super().partition_records(url, partition)

    def read_small(self, url, names):
        self._count("read_small")
        if self.old == "all":
            raise PeerError("POST %s/_cluster/read: 404" % url, url=url, status=404)
        return super().read_small(url, names)

    def post_records_inline(self, url, records, blobs):
        self._count("post_records_inline")
        if self.old in ("all", "inline"):
            return super().post_records(url, records), False
        return super().post_records_inline(url, records, blobs)

    def fetch_blob(self, url, sha256, write):
        self._count("fetch_blob")
        return super().fetch_blob(url, sha256, write)

    def put_file(self, url, record, f, hint_for=None):
        self._count("put_file")
        return super().put_file(url, record, f, hint_for)


@pytest.mark.parametrize("old_peer", [False, "all", "inline", "capped"],
                         ids=["batched", "old-peer", "no-inline-peer", "capped-lists"])
def test_anti_entropy_moves_small_files_in_batches(cluster_factory, old_peer):
    """Small blobs move many to a request (and record lists many partitions to a request);
    a large one is streamed alone.  Against a peer without the batch endpoints the same
    records move one by one.  Node 0 runs in this process to count its requests."""
    cl = cluster_factory(nodes=2, replicas=2)
    small = 150
    theirs = ["/bat/pull/%d" % i for i in range(small)]
    ours = ["/bat/push/%d" % i for i in range(small)]
    big = os.urandom(100_000)  # above the inline limit
    for n in theirs:
        assert cl.put(1, n, n.encode() * 3, V).status_code == 200
    assert cl.put(1, "/bat/pull/big", big, V).status_code == 200
    client = sync = None
    app = _node0_in_this_process(cl)
    try:
        store = app.node.store
        for n in ours:
            store_small(store, n.encode() * 5, n, V, None, None)
        store_small(store, big[::-1], "/bat/push/big", V, None, None)
        client = _CountingPeer(old=old_peer, secret=SECRET, timeout=30)
        sync = AntiEntropy(app.node, client, 30)
        out = sync.run_once()
        assert (out["pulled"], out["pushed"]) == (small + 1, small + 1), out
        assert sync.run_once()["differing"] == 0
        for n in theirs:
            assert store.get_record(n).sha256 == sha256(n.encode() * 3)
        for n in ours:
            assert cl.content(1, n) == n.encode() * 5
        assert cl.content(1, "/bat/push/big") == big[::-1]
        with store.open_blob(store.get_record("/bat/pull/big").sha256) as f:
            assert f.read() == big
        differing = out["differing"]
        calls = client.calls
        if old_peer == "capped":  # every partition asked for again until it came; blobs batched
            assert calls["partitions_records"] >= differing and calls["fetch_blob"] == calls["put_file"] == 1, calls
        elif old_peer == "inline":  # pulls batched; pushes offered inline once, then one by one
            assert calls["fetch_blob"] == 1 and calls["put_file"] == small + 1, calls
            assert 1 <= calls["post_records_inline"] <= 4, calls
        elif old_peer:
            assert calls["fetch_blob"] == calls["put_file"] == small + 1, calls
            assert calls["partition_records"] == differing and 1 <= calls["partitions_records"] <= 4, calls
            # asked at most once per worker thread (those already under way), then never again
            assert 1 <= calls["read_small"] <= 4 and 1 <= calls["post_records_inline"] <= 4, calls
        else:
            assert calls["fetch_blob"] == calls["put_file"] == 1, calls  # the large ones only
            assert calls["read_small"] == calls["post_records_inline"] <= 2 * ((differing + 31) // 32), calls
            assert calls["partitions_records"] <= 2 * ((differing + 31) // 32), calls   # two passes
            assert "partition_records" not in calls, calls
    finally:
        if sync is not None:
            sync.close()
        _close(app, client)


class _RefusingPeer(PeerClient):
    """A real peer client whose pushes fail with 500 whenever they carry ``refused`` (a record
    the owner will not take, e.g. from a newer version with rules this one lacks)."""

    def __init__(self, refused, **kwargs):
        super().__init__(**kwargs)
        self.refused = refused

    def post_records(self, url, records):
        if any(r.name == self.refused for r in records):
            raise PeerError("POST %s/_cluster/records: 500 refused" % url, url=url, status=500)
        return super().post_records(url, records)


def test_handoff_of_a_group_goes_on_without_the_partition_refused(cluster_factory):
    """Handoff compares many foreign partitions per request; when the owner refuses one of
    them, the others are still handed off and dropped here, and only that one is kept."""
    cl = cluster_factory(nodes=2, replicas=1)
    ring = cl.ring
    names = names_owned_by(ring, {cl.urls[1]}, 40, prefix="/ho/g")   # owned by node 1 alone
    parts = [partition_of(n, 10) for n in names]
    assert len(set(parts)) > 1
    # the refused record alone in its partition (that partition is kept whole, the others go)
    refused = next(n for n, p in zip(names, parts, strict=True) if parts.count(p) == 1)
    client = handoff = None
    app = _node0_holding_hints(cl, names)
    try:
        store = app.node.store
        client = _RefusingPeer(refused, secret=SECRET, timeout=30)
        handoff = Handoff(app.node, client, 30)
        out = handoff.run_once()
        assert (out["pushed"], out["dropped"], out["kept"]) == (39, 39, 1), out
        assert [n for n in names if store.get_record(n) is not None] == [refused]
        assert all(cl.content(1, n) == n.encode() for n in names if n != refused)
        assert cl.record(1, refused) is None
    finally:
        _close(app, handoff, client)


def test_handoff_forgets_nothing_while_a_peer_shows_a_newer_ring(cluster_factory):
    """A node restarted with the ring it had before a membership change it missed handed its
    hints to that old ring's owners and dropped its copies (the old owners may be leaving, a
    removed node about to be stopped).  A pass that hears a newer epoch from a peer keeps
    every copy; the next pass starts from the newer ring."""
    cl = cluster_factory(nodes=2, replicas=1)
    names = names_owned_by(cl.ring, {cl.urls[1]}, 20, prefix="/ho/epoch")
    newer = cl.ring.with_changes()   # the same members one epoch up, installed while node 0 was away
    app = _node0_holding_hints(cl, names)
    try:
        store = app.node.store
        r = cl.client.request("PUT", cl.urls[1], "/_cluster/ring", data=msgpack.packb(newer.to_dict()))
        assert r.status_code == 200
        handoff = app.node.tasks["handoff"]   # wired as the node wires it (make_tasks)
        out = handoff.run_once()
        assert (out["epoch"], out["pushed"], out["dropped"], out["kept"]) == (1, 20, 0, 20), out
        assert all(store.get_record(n) is not None for n in names)
        out = handoff.run_once()
        assert (out["epoch"], out["pushed"], out["dropped"]) == (newer.epoch, 0, 20), out
        assert app.node.ring.epoch == newer.epoch
        assert all(store.get_record(n) is None and cl.content(1, n) == n.encode() for n in names)
    finally:
        shutdown(app)
