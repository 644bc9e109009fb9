"""The leaving-members register: validation, last-writer-wins install, persistence, document edits."""

import pytest

from cluster.admin.draining import (
    changed,
    claimed_epoch,
    claimed_nodes,
    find,
    newest,
    next_epoch,
    pending_claim,
)
from cluster.node.state import DrainingList, RingConflict, check_draining
from cluster.ring import Node, Ring

A = {"id": "a", "url": "http://127.0.0.1:1"}
B = {"id": "b", "url": "http://127.0.0.1:2"}


def test_check_draining_normalises():
    doc = check_draining({"version": 3, "members": [dict(B, url=B["url"] + "/"), A, A]})
    assert doc == {"version": 3, "members": [A, B]}


@pytest.mark.parametrize("bad", [
    [], {"members": []}, {"version": -1, "members": []}, {"version": True, "members": []},
    {"version": 1, "members": {}}, {"version": 1, "members": [{"id": "", "url": "http://x"}]},
    {"version": 1, "members": [{"id": "a", "url": "ftp://x"}]}, {"version": 1, "members": ["a"]},
    {"version": 1, "members": [], "change": "add"}, {"version": 1, "members": [], "change": {"what": "x"}},
    {"version": 1, "members": [], "change": {"what": "x", "epoch": -1}},
    {"version": 1, "members": [], "change": {"what": 1, "epoch": 2}},
    {"version": 1, "members": [], "change": {"what": "x", "epoch": True}},
])
def test_check_draining_rejects(bad):
    with pytest.raises(ValueError):
        check_draining(bad)


def test_install_is_last_writer_wins_and_persists(tmp_path):
    d = DrainingList(str(tmp_path))
    assert d.doc == {"version": 0, "members": []}
    one = {"version": 1, "members": [A]}
    assert d.install(one) is True
    assert d.install(one) is False                     # the same again: nothing to do
    with pytest.raises(RingConflict):
        d.install({"version": 1, "members": [B]})      # same version, different list
    with pytest.raises(RingConflict):
        d.install({"version": 0, "members": []})       # older
    assert DrainingList(str(tmp_path)).doc == one      # a restarted node still knows
    assert d.install({"version": 2, "members": []}) is True
    assert DrainingList(str(tmp_path)).doc == {"version": 2, "members": []}


def test_changed_and_find():
    doc = {"version": 4, "members": [B]}
    new = changed(doc, add=[Node("a", "http://127.0.0.1:1", 1)])
    assert new == {"version": 5, "members": [A, B]}
    assert changed(new, remove=["b"]) == {"version": 6, "members": [A]}
    assert find(new, "a") == A and find(new, "http://127.0.0.1:2/") == B and find(new, "c") is None


def test_a_claimed_change_is_kept_checked_and_decides_the_next_epoch(tmp_path):
    """Two claims of one version differ in their change: the second is refused (serialised
    membership changes, cluster/admin/draining.py)."""
    claim_a = check_draining({"version": 2, "members": [A], "change": {"what": "remove-node a", "epoch": 7},
                              "extra": 1})
    assert claim_a == {"version": 2, "members": [A], "change": {"what": "remove-node a", "epoch": 7}}
    d = DrainingList(str(tmp_path))
    assert d.install(claim_a) is True
    with pytest.raises(RingConflict):
        d.install({"version": 2, "members": [A], "change": {"what": "remove-node b", "epoch": 7}})
    assert DrainingList(str(tmp_path)).doc == claim_a
    # later edits keep the last claim; the next ring's epoch is above it and above every ring
    assert changed(claim_a, remove=["a"]) == {"version": 3, "members": [], "change": claim_a["change"]}
    assert claimed_epoch(claim_a) == 7 and claimed_epoch({"version": 0, "members": []}) == 0
    ring5 = Ring([Node("a", A["url"], 1)], epoch=5, replicas=1, partition_power=2)
    ring9 = Ring([Node("a", A["url"], 1)], epoch=9, replicas=1, partition_power=2)
    assert next_epoch(claim_a, ring5) == 8 and next_epoch(claim_a, ring5, ring9) == 10
    assert next_epoch({"version": 0, "members": []}, ring5) == 6


def test_a_claim_names_the_nodes_its_ring_goes_to():
    doc = check_draining({"version": 1, "members": [], "change": {"what": "add-node c", "epoch": 4,
                                                                  "nodes": ["http://127.0.0.1:3/", B["url"]]}})
    assert claimed_nodes(doc) == ["http://127.0.0.1:3", B["url"]] and claimed_nodes({"version": 0}) == []
    ring3 = Ring([Node("a", A["url"], 1)], epoch=3, replicas=1, partition_power=2)
    ring4 = Ring([Node("a", A["url"], 1)], epoch=4, replicas=1, partition_power=2)
    assert pending_claim(doc, ring3) and not pending_claim(doc, ring4)
    with pytest.raises(ValueError):
        check_draining({"version": 1, "members": [], "change": {"what": "x", "epoch": 1, "nodes": ["ftp://x"]}})


def test_the_newest_document_of_a_split_version_is_the_one_most_nodes_hold():
    """A claim that lost (taken by one node, refused by the others) is not the newest for readers,
    whatever order the nodes answer in."""
    won = {"version": 3, "members": [A], "change": {"what": "remove-node a", "epoch": 2}}
    lost = {"version": 3, "members": [B], "change": {"what": "remove-node b", "epoch": 2}}
    older = {"version": 2, "members": []}
    assert newest([lost, won, won, older]) == won and newest([won, older, lost, won]) == won
    assert newest([older, RuntimeError("down")]) == older and newest([]) == {"version": 0, "members": []}
    # a tie is broken the same way for every reader (the lower encoding): here the list with member a
    assert newest([won, lost]) == newest([lost, won]) == won
