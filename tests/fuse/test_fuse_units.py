"""Pure logic of the mount, pinned with exact values (no FUSE needed)."""

import errno
import threading
import time

import pytest

from filetracker.errors import InvalidNameError, NotFoundError, RemoteError, VersionConflictError
from filetracker.fuse import tree
from filetracker.fuse.attrcache import TTLCache
from filetracker.fuse.errnos import errno_for, errno_for_status
from filetracker.fuse.proc import PF_EXITING, parse_stat
from filetracker.fuse.remote import StaleVersionError
from filetracker.fuse.singleflight import SingleFlight

pytestmark = pytest.mark.no_fuse_needed


def test_folder_entries_from_recursive_listing():
    got = tree.folder_entries("/p", ["a.txt", "sub/b.txt", "sub/deeper/c", "x", "x/y", "", "bad//z"])
    assert got == {
        "/p": {"a.txt": tree.FILE, "sub": tree.DIR, "x": tree.DIR},
        "/p/sub": {"b.txt": tree.FILE, "deeper": tree.DIR},
        "/p/sub/deeper": {"c": tree.FILE},
        "/p/x": {"y": tree.FILE},
    }
    assert tree.folder_entries("/", []) == {"/": {}}
    assert tree.folder_entries("/", ["f"]) == {"/": {"f": tree.FILE}}
    assert tree.parent_and_base("/a") == ("/", "a")
    assert tree.parent_and_base("/a/b/c") == ("/a/b", "c")
    assert tree.join("/", "a") == "/a" and tree.join("/a", "b") == "/a/b"


def test_ttl_cache_expiry_and_prefix():
    now = [100.0]
    c = TTLCache(1.0, clock=lambda: now[0])
    c.put("/a", 1)
    c.put("/a/b", 2)
    c.put("/ab", 3)
    c.put("/old", 4, stamp=99.5)
    assert c.get("/a") == 1 and c.get("/old") == 4
    now[0] = 100.5
    assert c.get("/old") is None and c.get("/a") == 1
    c.pop_prefix("/a")
    assert c.get("/a") is None and c.get("/a/b") is None and c.get("/ab") == 3
    now[0] = 101.0
    assert c.get("/ab") is None and len(c) == 0


def test_ttl_cache_bounded():
    c = TTLCache(10.0, max_entries=3)
    for i in range(5):
        c.put(i, i)
    assert len(c) <= 3 and c.get(4) == 4


def test_singleflight_shares_one_call():
    sf = SingleFlight()
    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return "done"

    results = []
    threads = [threading.Thread(target=lambda: results.append(sf.do("k", slow))) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == ["done"] * 5 and calls == [1]
    assert sf.do("k", lambda: "again") == "again"  # the key is free once finished


def test_singleflight_shares_errors():
    sf = SingleFlight()
    with pytest.raises(ValueError):
        sf.do("k", lambda: (_ for _ in ()).throw(ValueError("x")))
    assert sf.do("k", lambda: 7) == 7


def test_errno_mapping():
    assert errno_for(NotFoundError("x")) == errno.ENOENT
    assert errno_for(InvalidNameError("x")) == errno.EINVAL
    assert errno_for(RemoteError("x", status=401)) == errno.EACCES
    assert errno_for(RemoteError("x", status=403)) == errno.EACCES
    assert errno_for(RemoteError("x", status=507)) == errno.ENOSPC
    assert errno_for(RemoteError("x", status=None)) == errno.EIO
    assert errno_for(RemoteError("x", status=503)) == errno.EIO
    assert errno_for(RemoteError("x", status=400)) == errno.EINVAL
    assert errno_for(VersionConflictError("x")) == errno.EBUSY
    assert errno_for(OSError(errno.ENOSPC, "full")) == errno.ENOSPC
    assert errno_for(RuntimeError("?")) == errno.EIO
    assert errno_for_status(413) == errno.EFBIG
    assert errno_for(StaleVersionError("x")) == errno.ESTALE


def _stat_line(flags, exit_code, comm="cat (x)"):
    fields = ["S", "1", "1", "1", "0", "-1", str(flags)] + ["0"] * 42 + [str(exit_code)]
    return "123 (%s) %s\n" % (comm, " ".join(fields))


def test_parse_proc_stat():
    assert parse_stat(_stat_line(PF_EXITING | 0x40, 9)) == (PF_EXITING | 0x40, 9)
    assert parse_stat(_stat_line(0x400000, 0, comm="a) b")) == (0x400000, 0)
    assert parse_stat("garbage") is None


def test_next_version_waits_for_the_clock_but_not_for_foreign_versions():
    from filetracker.fuse.writing import WritingOps

    now = int(time.time())
    assert WritingOps._next_version(now - 100) >= now
    far = now + 3600  # another client's future version: go just above it, at once
    t = time.monotonic()
    assert WritingOps._next_version(far) == far + 1 and time.monotonic() - t < 0.5
    got = WritingOps._next_version(int(time.time()) + 1)  # one of ours, a second ahead: wait
    assert got <= time.time() + 1
    t = time.monotonic()   # 3 s ahead: not one of ours (they never lead by more than 1 s): no wait
    now = time.time()      # read once: a second boundary between two reads would fail the comparison
    assert WritingOps._next_version(int(now) + 3) >= now + 3 and time.monotonic() - t < 0.5
