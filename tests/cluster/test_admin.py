"""``filetracker-admin``: the pure placement analysis, usage errors, status and verify (issue 4,
acceptance 6: correct answers with a node down, never a traceback)."""

import io
import json
import os
import subprocess

import pytest

from cluster.admin.access import NodeView
from cluster.admin.analysis import EMPTY_DIGEST, analyze, record_problems
from cluster.admin.progress import Progress
from cluster.ring import Ring
from filetracker.records import Record
from tests.cluster.test_admin_support import admin, content_of, start_gateway, write_files
from tests.support.procs import script

URLS = ["http://n%d" % i for i in range(4)]


def views_for(ring, holdings, down=()):
    """NodeViews where node ``u`` holds ``holdings[u]`` = {partition: digest}."""
    member_ids = {n.id for n in ring.nodes}
    return [NodeView(id=u, url=u, member=u in member_ids, up=u not in down, digests=dict(holdings.get(u, {})))
            for u in URLS if u in member_ids or u in holdings]


def balanced_holdings(ring, digest="d"):
    out = {}
    for p in range(ring.partitions):
        for n in ring.partition_owners(p):
            out.setdefault(n.id, {})[p] = digest + str(p)
    return out


def test_analysis_balanced_and_after_adding_a_node():
    old = Ring.initial(URLS[:3], replicas=3, partition_power=4)
    held = balanced_holdings(old)
    a = analyze(old, views_for(old, held))
    assert a.balanced and not a.moves
    new = old.with_changes(add=[URLS[3]])
    a = analyze(new, views_for(new, held))
    assert not a.balanced
    # each partition the new node owns is missing there; the old owner it replaced holds it as foreign
    for m in a.moves:
        before = {n.id for n in old.partition_owners(m.partition)}
        after = {n.id for n in new.partition_owners(m.partition)}
        assert m.targets == (URLS[3],)
        assert m.drop == tuple(before - after) and len(m.drop) == 1
        assert set(m.sources) == before
    assert {m.partition for m in a.moves} == new.owned_partitions(URLS[3])
    assert sum(a.pairs().values()) == len(new.owned_partitions(URLS[3]))
    assert sorted(p for ps in a.foreign.values() for p in ps) == sorted(new.owned_partitions(URLS[3]))


def test_analysis_split_and_down():
    ring = Ring.initial(URLS[:3], replicas=3, partition_power=2)
    held = balanced_holdings(ring)
    held[URLS[1]][2] = "other"
    del held[URLS[2]][3]
    a = analyze(ring, views_for(ring, held))
    assert a.split == [2, 3] and not a.foreign
    assert [m.targets for m in a.moves] == [(URLS[1],), (URLS[2],)]
    a = analyze(ring, views_for(ring, held, down=[URLS[2]]))
    assert a.down == [URLS[2]] and a.split == [2] and not a.balanced


def test_analysis_removed_node_holds_foreign():
    ring = Ring.initial(URLS[:3], replicas=2, partition_power=3)
    held = balanced_holdings(ring)
    held[URLS[3]] = {0: "x0", 5: "x5"}        # drained node outside the ring
    a = analyze(ring, views_for(ring, held))
    assert a.foreign == {URLS[3]: [0, 5]}
    assert all(m.drop == (URLS[3],) for m in a.moves)


def test_record_problems():
    ring = Ring.initial(URLS[:3], replicas=2, partition_power=0)
    owners = [n.id for n in ring.partition_owners(0)]
    other = next(u for u in URLS[:3] if u not in owners)
    new, old = Record("/a", 5, "b" * 64, 3), Record("/a", 4, "a" * 64, 3)
    got = record_problems(ring, 0, {owners[0]: [new], owners[1]: [old], other: [Record("/z", 1, "c" * 64, 1)]},
                          set(URLS[:3]))
    assert got == {("lacks", owners[1], "/a", 5, "b" * 64, 3), ("lacks", owners[0], "/z", 1, "c" * 64, 1),
                   ("lacks", owners[1], "/z", 1, "c" * 64, 1), ("foreign", other, "/z", 1, "c" * 64, 1)}
    assert record_problems(ring, 0, {owners[0]: [new], owners[1]: [new]}, set(URLS[:3])) == set()
    assert EMPTY_DIGEST == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_progress_plain_lines():
    out = io.StringIO()
    p = Progress(out, unit="file", tty=False, interval=0)
    p.update(0, 10, "partitions left 4/4")
    p.update(5, 10, "partitions left 2/4")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("rebalance: 0/10 files, partitions left 4/4")
    assert lines[1].startswith("rebalance: 5/10 files, partitions left 2/4") and "time left" in lines[1]


def run_admin(*args, env=None):
    e = dict(os.environ)
    e.pop("FILETRACKER_ADMIN_URL", None)
    e.update(env or {})
    return subprocess.run([script("filetracker-admin")] + list(args), capture_output=True, text=True,
                          timeout=60, env=e, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args,code,text", [
    (["status"], 2, "no cluster given"),
    (["--cluster", "ftp://x", "status"], 2, "not a base URL"),
    (["--cluster", "http://127.0.0.1:1", "frobnicate"], 2, "invalid choice"),
    (["--cluster", "http://127.0.0.1:1", "add-node", "http://127.0.0.1:2", "--weight", "0"], 2, "positive"),
    (["--cluster", "http://127.0.0.1:1", "status"], 1, "connection refused"),
    (["--cluster", "http://127.0.0.1:1", "--cluster-secret-file", "/nonexistent/secret", "status"], 2,
     "cannot read cluster secret"),
])
def test_usage_and_unreachable(args, code, text):
    r = run_admin(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert text in r.stderr and "Traceback" not in r.stderr


def test_env_url(cluster_factory):
    c = cluster_factory(nodes=3)
    r = run_admin("--cluster-secret-file", c.secret_file, "status", "--json",
                  env={"FILETRACKER_ADMIN_URL": c.urls[2]})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ring_agreed"] and doc["balanced"] and not doc["down"] and len(doc["nodes"]) == 3
    assert [n["retired_bytes"] for n in doc["nodes"]] == [0, 0, 0]   # replaced blobs kept (none yet)
    # without the secret: a clear refusal, exit 1
    r = run_admin("--cluster", c.urls[0], "status")
    assert r.returncode == 1 and "--cluster-secret-file" in r.stderr and "Traceback" not in r.stderr


def test_status_and_verify_with_a_node_down(cluster_factory):
    """Acceptance 6, plus verify finding and repairing replica and blob differences."""
    c = cluster_factory(nodes=3)
    gw_svc, gw = start_gateway(c, c.urls, "gw")
    try:
        names = ["/v/f%03d" % i for i in range(60)]
        write_files(gw, names, workers=8)
        r = admin(c, "verify")
        assert r.returncode == 0 and "verify: OK" in r.stdout

        # a newer version on one node only, and a corrupt blob on another
        assert c.put(0, names[0], b"newer", 1795550400 + 10).status_code == 200
        rec = c.record(1, names[1])
        blob = os.path.join(c.dirs[1], "blobs", rec.sha256[:2], rec.sha256)
        with open(blob, "r+b") as f:
            f.write(b"XX")
        r = admin(c, "verify")
        assert r.returncode == 1
        assert "lacks version" in r.stdout and names[0] in r.stdout
        assert "1 corrupt" in r.stdout and names[1] in r.stdout
        r = admin(c, "verify", "--repair")
        assert r.returncode == 0 and "1 repaired" in r.stdout, r.stdout
        r = admin(c, "verify")
        assert r.returncode == 0 and "replica differences: 0" in r.stdout and "verify: OK" in r.stdout
        assert all(c.content(i, names[0]) == b"newer" for i in range(3))
        assert c.content(1, names[1]) == content_of(names[1])

        # acceptance 6: a node down
        c.kill9(2)
        r = admin(c, "status")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "DOWN" in r.stdout and c.urls[2] in r.stdout
        r = admin(c, "status", "--json")
        doc = json.loads(r.stdout)
        assert r.returncode == 1 and doc["down"] == [c.urls[2]]
        assert [n["up"] for n in doc["nodes"]] == [n != c.urls[2] for n in sorted(c.urls)]
        r = admin(c, "verify")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "DOWN, not checked" in r.stdout and "incomplete" in r.stdout
        r = admin(c, "rebalance", "--dry-run")
        assert r.returncode == 0 and "down: " + c.urls[2] in r.stdout
        r = admin(c, "rebalance", "--down-timeout", "1")
        assert r.returncode == 1 and "down" in r.stderr and "Traceback" not in r.stderr
        # the wait ends first: it names the node that holds the balance up
        r = admin(c, "rebalance", "--wait-timeout", "1", "--down-timeout", "60")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("filetracker-admin: not balanced after 1s: "), r.stderr
        assert r.stderr.endswith("waiting for %s, which is down (start it again, or remove it with remove-node)\n"
                                 % c.urls[2]), r.stderr
        # the cluster keeps serving through the gateway
        assert c.client.request("GET", gw, "/files" + names[5]).content == content_of(names[5])
        # the down node is no seed problem: any live node answers
        r = admin(c, "status", url=c.urls[2] + "," + c.urls[0])
        assert r.returncode == 1 and "DOWN" in r.stdout
    finally:
        gw_svc.stop()


def test_membership_errors(cluster_factory):
    c = cluster_factory(nodes=3)
    r = admin(c, "add-node", c.urls[1])
    assert r.returncode == 1 and "already a member" in r.stderr
    r = admin(c, "add-node", "http://127.0.0.1:1")
    assert r.returncode == 1 and "cannot reach the new node" in r.stderr
    r = admin(c, "remove-node", "http://127.0.0.1:1")
    assert r.returncode == 1 and "not a member" in r.stderr
    assert all(c.client.get_ring(u).epoch == 1 for u in c.urls)


def test_add_node_guards_the_internal_api_as_the_members_do(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1)
    open_node = cluster_factory(nodes=1, replicas=1, secret=None)
    # it was added: then anyone could write to it, and the members refused its handoff
    r = admin(c, "add-node", open_node.urls[0])
    assert r.returncode == 1, r.stdout
    assert r.stderr == ("filetracker-admin: %s runs without a cluster secret, but the cluster has one: its internal "
                        "API would be open to anyone and the members would refuse what it sends them; restart it "
                        "with --cluster-secret-file\n" % open_node.urls[0])
    r = admin(open_node, "--cluster-secret-file", c.secret_file, "add-node", c.urls[0])
    assert r.returncode == 1, r.stdout
    assert "%s has a cluster secret, but the members run without one" % c.urls[0] in r.stderr
    assert [c.client.get_ring(u).epoch for u in (c.urls[0], open_node.urls[0])] == [1, 1]


def test_progress_bar_on_a_terminal():
    out = io.StringIO()
    p = Progress(out, unit="file", tty=True)
    p.update(3, 10, "partitions left 2/4")
    p.update(10, 10, "partitions left 0/4")
    p.close()
    text = out.getvalue()
    assert "10/10" in text and "partitions left 0/4" in text and "file/s" in text


def test_ring_agreement_no_wait_and_weight(cluster_factory):
    """A node left behind on an older ring is reported and brought up to date; --no-wait; --weight."""
    c = cluster_factory(nodes=3, members=2, replicas=2)
    for i in range(40):
        name = "/w/f%02d" % i
        for node in range(2):
            assert c.put(node, name, content_of(name), 1795550400).status_code == 200
    ring = c.client.get_ring(c.urls[0])
    newer = Ring(ring.nodes, epoch=ring.epoch + 1, replicas=ring.replicas, partition_power=ring.partition_power)
    assert c.client.put_ring(c.urls[0], newer)
    r = admin(c, "status")
    assert r.returncode == 1 and "RING NOT AGREED" in r.stdout
    r = admin(c, "rebalance")
    assert r.returncode == 0 and "gave ring epoch 2" in r.stdout
    assert admin(c, "status").returncode == 0

    r = admin(c, "add-node", c.urls[2], "--weight", "2")
    assert r.returncode == 0, r.stderr
    ring = c.client.get_ring(c.urls[1])
    assert ring.epoch == 3 and ring.node(c.urls[2]).weight == 2
    r = admin(c, "rebalance", "--no-wait")
    assert r.returncode == 0 and "movement started" in r.stdout
    r = admin(c, "rebalance", "--wait-timeout", "60")
    assert r.returncode == 0 and "balanced" in r.stdout
    held = {}
    for i in range(3):
        for name in c.listing(i):
            held.setdefault(name, set()).add(c.urls[i])
    assert all(held[n] == {o.url for o in ring.owners(n)} for n in held) and len(held) == 40
