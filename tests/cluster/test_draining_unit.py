"""The leaving-members register: validation, last-writer-wins install, persistence, document edits."""

import pytest

from cluster.admin.draining import changed, find
from cluster.node.state import DrainingList, RingConflict, check_draining
from cluster.ring import Node

A = {"id": "a", "url": "http://127.0.0.1:1"}
B = {"id": "b", "url": "http://127.0.0.1:2"}


def test_check_draining_normalises():
    doc = check_draining({"version": 3, "members": [dict(B, url=B["url"] + "/"), A, A]})
    assert doc == {"version": 3, "members": [A, B]}


@pytest.mark.parametrize("bad", [
    [], {"members": []}, {"version": -1, "members": []}, {"version": True, "members": []},
    {"version": 1, "members": {}}, {"version": 1, "members": [{"id": "", "url": "http://x"}]},
    {"version": 1, "members": [{"id": "a", "url": "ftp://x"}]}, {"version": 1, "members": ["a"]},
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
