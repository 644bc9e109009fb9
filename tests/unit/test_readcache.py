"""filetracker.storage.readcache.ReadCache: exact behaviour of fill, get, invalidate and the bound."""

import sys

from filetracker.records import Record
from filetracker.storage.readcache import BUCKETS, ENTRY_OVERHEAD, ReadCache


def rec(name, version=100, size=3, deleted=False):
    return Record(name, version, "0" * 64 if not deleted else "", 0 if deleted else size, deleted)


def other_bucket(name, count=1):
    """Names whose invalidation bucket differs from ``name``'s (hash() is per process)."""
    out, i = [], 0
    while len(out) < count:
        cand = "/other/%d" % i
        if hash(cand) % BUCKETS != hash(name) % BUCKETS:
            out.append(cand)
        i += 1
    return out


def test_fill_then_get_with_and_without_body():
    c = ReadCache(1 << 20)
    c.fill("/a", rec("/a"), b"abc", c.generation("/a"))
    c.fill("/b", rec("/b"), None, c.generation("/b"))
    assert c.get("/a", want_body=True) == (rec("/a"), b"abc")
    assert c.get("/b") == (rec("/b"), None)
    assert c.get("/b", want_body=True) is None  # live record without its body: the caller reads it
    assert c.get("/missing") is None
    assert c.stats()["hits"] == 2 and c.stats()["misses"] == 2


def test_a_tombstone_answers_even_when_a_body_is_wanted():
    c = ReadCache(1 << 20)
    c.fill("/t", rec("/t", deleted=True), b"ignored", c.generation("/t"))
    assert c.get("/t", want_body=True) == (rec("/t", deleted=True), None)


def test_invalidate_removes_the_name_and_rejects_fills_started_before():
    c = ReadCache(1 << 20)
    g = c.generation("/a")
    c.fill("/a", rec("/a"), b"abc", g)
    c.invalidate("/a")
    assert c.get("/a") is None
    c.fill("/a", rec("/a", 99), b"old", g)  # a read that began before the write
    assert c.get("/a") is None
    c.fill("/a", rec("/a", 101), b"new", c.generation("/a"))
    assert c.get("/a", want_body=True) == (rec("/a", 101), b"new")


def test_a_write_elsewhere_does_not_reject_a_fill():
    c = ReadCache(1 << 20)
    g = c.generation("/a")
    for name in other_bucket("/a", 3):
        c.invalidate(name)
    c.fill("/a", rec("/a"), b"abc", g)
    assert c.get("/a") is not None


def test_invalidate_everything():
    c = ReadCache(1 << 20)
    g = c.generation("/a")
    c.fill("/b", rec("/b"), b"abc", c.generation("/b"))
    c.invalidate(None)
    assert c.get("/b") is None and c.stats()["bytes"] == 0
    c.fill("/a", rec("/a"), b"abc", g)
    assert c.get("/a") is None


def test_bodies_that_do_not_fit_are_dropped_and_the_record_kept():
    c = ReadCache(1 << 20, max_item_bytes=4)
    c.fill("/big", rec("/big", size=5), b"12345", c.generation("/big"))
    assert c.get("/big") == (rec("/big", size=5), None)
    c.fill("/short", rec("/short", size=9), b"123", c.generation("/short"))  # not the whole body
    assert c.get("/short") == (rec("/short", size=9), None)


def test_the_same_record_without_a_body_keeps_the_cached_body():
    c = ReadCache(1 << 20)
    c.fill("/a", rec("/a"), b"abc", c.generation("/a"))
    c.fill("/a", rec("/a"), None, c.generation("/a"))
    assert c.get("/a", want_body=True) == (rec("/a"), b"abc")


def test_least_recently_used_entries_leave_first():
    per = ENTRY_OVERHEAD + sys.getsizeof("/1") + 3  # every name here has the same length
    c = ReadCache(3 * per)
    for n in ("/1", "/2", "/3"):
        c.fill(n, rec(n), b"abc", c.generation(n))
    c.get("/1")  # now the most recent
    c.fill("/4", rec("/4"), b"abc", c.generation("/4"))
    assert c.get("/2") is None
    assert [n for n in ("/1", "/3", "/4") if c.get(n) is not None] == ["/1", "/3", "/4"]
    assert c.stats()["bytes"] == 3 * per


def test_size_zero_disables_it():
    c = ReadCache(0)
    assert not c.enabled
    c.fill("/a", rec("/a"), b"abc", c.generation("/a"))
    assert c.get("/a") is None


def test_long_names_count_against_the_bound():
    c = ReadCache(64 * 1024)
    for i in range(1000):
        name = "/long/%04d/" % i + "n" * 1000
        c.fill(name, rec(name), None, c.generation(name))
    st = c.stats()
    assert st["bytes"] <= 64 * 1024
    assert st["entries"] == 64 * 1024 // (ENTRY_OVERHEAD + sys.getsizeof("/long/0000/" + "n" * 1000))
