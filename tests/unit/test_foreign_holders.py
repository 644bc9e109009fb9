"""Which nodes a gateway read asks besides the owners (cluster/gateway/holders.py, view.py): exact values.

Pure: rings and poll answers are built here, nothing is started.
"""

import time

import msgpack
import pytest

from cluster.gateway.config import GatewayConfig
from cluster.gateway.holders import ForeignHolders, parse_answer
from cluster.gateway.view import ClusterView
from cluster.ring import Ring, partition_of

A, B, C, D = ("http://10.0.0.%d:1" % i for i in range(1, 5))


def test_poll_answers_make_the_holders_map():
    h = ForeignHolders()
    assert not h.settled(1) and not h.any_held() and h.holders(7) == ()
    h.record_poll(2, {A: (2, frozenset({7, 9})), B: (2, frozenset()), C: (2, frozenset({7}))})
    assert h.settled(2) and not h.settled(1) and h.any_held()
    assert h.holders(7) == [A, C] and h.holders(9) == [A] and h.holders(8) == ()
    assert h.snapshot() == {"settled_epoch": 2, "partitions_held": {A: 2, B: 0, C: 1}}
    # a node that did not answer, or answered under another ring: not settled, the others still count
    h.record_poll(2, {A: (2, frozenset({9})), B: None, C: (1, frozenset({7}))})
    assert not h.settled(2) and h.holders(9) == [A] and h.holders(7) == [C]
    # a node that misses a poll keeps what it last said (it may hold the only newest version)
    h.record_poll(2, {A: None, B: (2, frozenset()), C: (2, frozenset())})
    assert not h.settled(2) and h.holders(9) == [A] and h.holders(7) == ()
    assert h.snapshot()["partitions_held"] == {A: 1, B: 0, C: 0}
    h.record_poll(3, {A: (3, frozenset()), B: (3, frozenset())})
    assert h.settled(3) and not h.any_held()
    h.record_poll(3, {})
    assert not h.settled(3)          # nobody asked: nothing known


def test_parse_answer():
    assert parse_answer(msgpack.packb({"epoch": 4, "partitions": [3, 1]})) == (4, frozenset({1, 3}))
    for bad in ([1], {"epoch": "4", "partitions": []}, {"epoch": 4, "partitions": [True]}, {"epoch": 4}):
        with pytest.raises(ValueError):
            parse_answer(msgpack.packb(bad))


def _view(window=3600.0):
    view = ClusterView(GatewayConfig(nodes=(A,), transition_reads=window))
    old = Ring.initial([A, B, C])
    view._install(old)
    new = old.with_changes(add=[D])
    view._install(new)
    return view, old, new


def _moved(old, new):
    """A name whose owners changed: (name, its partition, its owner that left)."""
    for k in range(1000):
        name = "/n%d" % k
        before = {n.url for n in old.owners(name)}
        after = {n.url for n in new.owners(name)}
        if before != after:
            return name, partition_of(name, new.partition_power), (before - after).pop()
    raise AssertionError("no moved name")


def test_within_the_window_the_previous_owners_are_asked_whatever_the_poll_says():
    """A poll answer is seconds old, and a gateway still on the old ring writes to the former
    owners after they answered it: the window is not cut short by a poll."""
    view, old, new = _view()
    name, p, left = _moved(old, new)
    previous = [n.url for n in old.owners(name)]
    assert [n.url for n in view.transition_owners(name)] == previous
    assert view.nodes_to_poll() == [A, B, C, D]
    view.holders.record_poll(2, {url: (2, frozenset()) for url in (A, B, C, D)})
    assert view.holders.settled(2) and [n.url for n in view.transition_owners(name)] == previous


def test_after_the_window_the_holders_decide():
    view, old, new = _view()
    view._replaced = [(r, time.monotonic() - 3601.0) for r, _ in view._replaced]
    name, p, left = _moved(old, new)
    answers = {url: (2, frozenset()) for url in (A, B, C)}
    answers[left] = (2, frozenset({p}))
    view.holders.record_poll(2, answers)
    assert [n.url for n in view.transition_owners(name)] == [left]   # the data is still there
    answers[left] = (2, frozenset())
    view.holders.record_poll(2, answers)
    assert view.transition_owners(name) == []                       # handed off: owners only


def test_a_gateway_that_never_saw_the_change_asks_the_holders():
    view = ClusterView(GatewayConfig(nodes=(A,), transition_reads=0.0))
    old = Ring.initial([A, B, C])
    new = old.with_changes(add=[D])
    view._install(new)                   # started after the change: no replaced ring
    name, p, left = _moved(old, new)
    assert view.transition_owners(name) == []
    view.holders.record_poll(2, {A: (2, frozenset()), B: (2, frozenset()), C: (2, frozenset()), D: None})
    assert view.transition_owners(name) == []
    held = {url: (2, frozenset()) for url in (A, B, C)}
    held[left] = (2, frozenset({p}))
    view.holders.record_poll(2, dict(held, **{D: None}))
    assert [n.url for n in view.transition_owners(name)] == [left]


def test_the_window_ends_by_time_and_removed_members_stop_being_polled():
    view, old, new = _view(window=60.0)   # far longer than the checks take, however busy the machine
    name, _, _ = _moved(old, new)
    shrunk = new.with_changes(remove=[A])
    view._install(shrunk)
    assert view.nodes_to_poll() == [B, C, D, A]       # A left the ring but may hold data to hand off
    view._replaced = [(r, time.monotonic() - 61.0) for r, _ in view._replaced]
    assert view.nodes_to_poll() == [B, C, D] and view.transition_owners(name) == []
