"""The merge rule: exact winners, including every tie case."""

import itertools

from filetracker.records import TOMBSTONE_SHA256, Record, beats, merge, merge_all, order_key

A = "a" * 64
B = "b" * 64


def data(version, sha=A, size=3, name="/n"):
    return Record(name=name, version=version, sha256=sha, size=size)


def tomb(version, name="/n"):
    return Record.tombstone(name, version)


def test_higher_version_wins():
    assert merge(data(1), data(2)) == data(2)
    assert merge(data(2), data(1)) == data(2)
    assert merge(tomb(1), data(2)) == data(2)
    assert merge(data(1), tomb(2)) == tomb(2)


def test_tie_tombstone_beats_data():
    assert merge(data(5), tomb(5)) == tomb(5)
    assert merge(tomb(5), data(5, sha="f" * 64)) == tomb(5)


def test_tie_larger_sha_wins():
    assert merge(data(5, A), data(5, B)) == data(5, B)
    assert merge(data(5, B), data(5, A)) == data(5, B)


def test_equal_records():
    assert merge(data(5), data(5)) == data(5)
    assert not beats(data(5), data(5))


def test_none():
    assert merge(None, data(0)) == data(0)
    assert merge(data(0), None) == data(0)
    assert merge(None, None) is None
    assert merge_all([]) is None
    assert merge_all([None, None]) is None
    assert beats(data(0), None)
    assert not beats(None, data(0))


def test_order_key_exact():
    assert order_key(None) == (-1, 0, "")
    assert order_key(data(7, B)) == (7, 0, B)
    assert order_key(tomb(7)) == (7, 1, TOMBSTONE_SHA256)


def test_merge_all_is_order_independent():
    records = [data(3, A), data(3, B), tomb(3), data(2, "f" * 64), tomb(1)]
    for perm in itertools.permutations(records):
        assert merge_all(perm) == tomb(3)
    records = [data(3, A), data(3, B), data(1)]
    for perm in itertools.permutations(records):
        assert merge_all(perm) == data(3, B)


def test_dict_round_trip():
    r = data(9, B, size=11, name="/x/y")
    assert r.to_dict() == {"name": "/x/y", "version": 9, "sha256": B, "size": 11, "deleted": False}
    assert Record.from_dict(r.to_dict()) == r
    t = tomb(4, name="/z")
    assert Record.from_dict(t.to_dict()) == t
    assert t.sha256 == "" and t.size == 0 and t.deleted
    assert r.with_name("/other").name == "/other"


def test_worth_copying_keeps_expired_tombstones_from_replicas_without_the_name():
    from filetracker.records import worth_copying
    tomb = Record.tombstone("/t", 100)
    live = Record("/t", 50, "a" * 64, 3)
    newer = Record("/t", 200, "b" * 64, 3)
    assert worth_copying(tomb, None, 100) is True          # not expired (version not below the cutoff)
    assert worth_copying(tomb, None, 101) is False         # expired, and nothing there to delete
    assert worth_copying(tomb, live, 10 ** 9) is True      # the data there is deleted however old
    assert worth_copying(tomb, newer, 0) is False          # a newer record wins, as with beats
    assert worth_copying(tomb, tomb, 0) is False
    assert worth_copying(live, None, 10 ** 9) is True      # data is always copied
