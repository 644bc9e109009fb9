"""Fixes from an operator review of ``filetracker-admin`` and the gateway's status page.
Real node and gateway processes; ``filetracker-admin`` runs as a subprocess.

* ``remove-node`` refuses to leave fewer nodes than N (each file would keep fewer copies)
  unless ``--allow-fewer-replicas``;
* ``status`` counts a leaving (or ``--drain``) node that is down: summary and exit status;
* after a finished ``remove-node`` the gateway's status page no longer says the node is leaving.
"""

import time

import msgpack
import requests

from tests.cluster.test_admin_support import admin, content_of, start_gateway, write_files
from tests.support.procs import free_port


def rings(c):
    return [c.client.get_ring(u) for u in c.urls]


def draining_members(c, i):
    doc = msgpack.unpackb(c.client.request("GET", c.urls[i], "/_cluster/draining").content, raw=False)
    return doc["members"]


def test_remove_node_refuses_to_lower_the_replica_count(cluster_factory):
    c = cluster_factory(nodes=3)   # N = 3
    r = admin(c, "remove-node", c.urls[2])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "only 2 copies of each file" in lines[0] and "--allow-fewer-replicas" in lines[0], lines[0]
    assert "add-node" in lines[0]
    assert r.stdout == ""
    # nothing changed: same ring everywhere, nobody listed as leaving
    assert [g.epoch for g in rings(c)] == [1, 1, 1]
    assert all(len(g.nodes) == 3 for g in rings(c))
    assert draining_members(c, 0) == []


def test_remove_node_with_allow_fewer_replicas_warns(cluster_factory):
    c = cluster_factory(nodes=3)
    r = admin(c, "remove-node", c.urls[2], "--allow-fewer-replicas", "--no-wait")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "warning: 2 nodes left for N=3: the cluster keeps only 2 copies of each file" in r.stdout
    assert "2 nodes, N=2" in r.stdout
    assert [len(g.nodes) for g in rings(c)[:2]] == [2, 2]


def test_remove_node_above_n_needs_no_flag(cluster_factory):
    c = cluster_factory(nodes=4)   # N = 3: 3 nodes are left, every file keeps 3 copies
    r = admin(c, "remove-node", c.urls[3], "--no-wait")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "warning" not in r.stdout and "3 nodes, N=3" in r.stdout


def test_status_counts_a_leaving_node_that_is_down(cluster_factory):
    c = cluster_factory(nodes=4)
    c.kill9(3)
    r = admin(c, "remove-node", c.urls[3], "--no-wait")
    assert "ring epoch 2: removed" in r.stdout, (r.stdout, r.stderr)
    r = admin(c, "status")
    table = r.stdout.splitlines()
    row = next(line for line in table if line.startswith(c.urls[3]))
    assert "(leaving)" in row and "DOWN" in row
    summary = next(line for line in table if line.startswith("ring epoch"))
    assert "all nodes up" not in summary and "balanced" not in summary.split(";")[-1], summary
    assert "DOWN: %s" % c.urls[3] in summary, summary
    assert "remove-node %s" % c.urls[3] in r.stdout   # how to stop waiting for it
    assert r.returncode == 1
    # like verify in the same state
    assert admin(c, "verify").returncode == 1
    # remove-node again forgets it; then the cluster is healthy again
    r = admin(c, "remove-node", c.urls[3])
    assert r.returncode == 0 and "no longer listed as leaving" in r.stdout, (r.stdout, r.stderr)
    r = admin(c, "status")
    assert r.returncode == 0 and c.urls[3] not in r.stdout, r.stdout


def test_status_with_drain_of_a_down_node(cluster_factory):
    c = cluster_factory(nodes=3)
    gone = "http://127.0.0.1:%d" % free_port()
    r = admin(c, "status", "--drain", gone)
    summary = r.stdout.splitlines()
    assert any(line.startswith(gone) and "DOWN" in line for line in summary), r.stdout
    assert "DOWN: %s" % gone in r.stdout and "all nodes up" not in r.stdout
    assert r.returncode == 1
    r = admin(c, "status", "--json", "--drain", gone)
    assert r.returncode == 1 and '"balanced": false' in r.stdout


def test_status_page_after_a_finished_remove_node(cluster_factory):
    c = cluster_factory(nodes=4)
    gw_svc, gw = start_gateway(c, c.urls, "gw")   # every node a seed, the removed one too
    try:
        names = ["/sp/f%02d" % i for i in range(20)]
        write_files(gw, names)
        r = admin(c, "remove-node", c.urls[3])
        assert r.returncode == 0 and "drained: no longer listed as leaving" in r.stdout, (r.stdout, r.stderr)
        time.sleep(1.2)   # the page's document is cached for a second
        doc = requests.get(gw + "/status", params={"format": "json"}, timeout=10).json()
        node = next(n for n in doc["nodes"] if n["url"] == c.urls[3])
        assert node["up"] and not node["member"] and not node["leaving"]
        assert not node["routed"]   # the gateway does not route to a node outside its ring
        assert not any("leaving" in line for line in doc["moves"]), doc["moves"]
        page = requests.get(gw + "/status", timeout=10).text
        assert "is leaving the cluster" not in page
        assert "%s (not in ring)" % c.urls[3] in page
        assert requests.get(gw + "/files" + names[3], timeout=10).content == content_of(names[3])
    finally:
        gw_svc.stop()


def test_verify_verdict_says_what_it_found(cluster_factory):
    """The last line said PROBLEMS FOUND for a --drain node that was down with nothing wrong
    anywhere, and INCOMPLETE for a corrupt blob found while a member was down."""
    import os

    c = cluster_factory(nodes=3)
    gw_svc, gw = start_gateway(c, c.urls, "gw")
    try:
        names = ["/verdict/f%02d" % i for i in range(6)]
        write_files(gw, names, workers=4)
        r = admin(c, "verify", "--drain", "http://127.0.0.1:%d" % free_port())
        assert r.returncode == 1 and "DOWN, not checked" in r.stdout, r.stdout
        assert r.stdout.rstrip().endswith("verify: INCOMPLETE"), r.stdout
        rec = c.record(0, names[0])
        with open(os.path.join(c.dirs[0], "blobs", rec.sha256[:2], rec.sha256), "r+b") as f:
            f.write(b"XX")
        c.kill9(2)
        r = admin(c, "--timeout", "2", "verify")
        assert r.returncode == 1 and "1 corrupt" in r.stdout, r.stdout
        assert r.stdout.rstrip().endswith("verify: PROBLEMS FOUND"), r.stdout
    finally:
        gw_svc.stop()


def test_verify_does_not_count_an_expired_tombstone_the_nodes_never_copy(cluster_factory):
    """Nodes do not copy a tombstone older than --tombstone-ttl to a replica without the name
    (worth_copying); verify counted that replica as lacking it (PROBLEMS FOUND, which --repair
    could not fix, and rebalance waited for the reclaim, a week by default)."""
    now = int(time.time())
    c = cluster_factory(nodes=3, node_args=["--tombstone-ttl", "1"])
    for i in (0, 1):
        assert c.delete(i, "/expired/t", now - 50).status_code == 200
        assert c.delete(i, "/fresh/t", now + 3600).status_code == 200
    time.sleep(1.5)
    r = admin(c, "verify")
    # the fresh tombstone is missing on node 2 (a real difference), the expired one is not
    assert r.returncode == 1 and "/fresh/t" in r.stdout and "/expired/t" not in r.stdout, r.stdout
    assert "replica differences: 1" in r.stdout, r.stdout


def test_rebalance_waiting_for_a_down_member_says_so(cluster_factory):
    """With a member down and nothing to move among the others, it said "partitions left 0/1"
    and then "not balanced after 2s: 0 partitions still to move": the block is the member."""
    c = cluster_factory(nodes=3)
    gw_svc, gw = start_gateway(c, c.urls, "gw")
    try:
        write_files(gw, ["/waiting/f%d" % i for i in range(4)], workers=2)
    finally:
        gw_svc.stop()
    c.kill9(2)
    r = admin(c, "--timeout", "2", "rebalance", "--wait-timeout", "2", "--down-timeout", "60")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "not balanced after 2s: waiting for %s, which is down" % c.urls[2] in r.stderr, r.stderr
    assert "0 partitions still to move" not in r.stderr
