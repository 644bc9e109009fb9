"""FcntlLockManager: shared/exclusive across real processes, deletion races."""

import multiprocessing
import os
import time

from filetracker.client.lock_manager import FcntlLockManager, NoOpLockManager


def _hold(locks_dir, name, mode, ready, release):
    lock = FcntlLockManager(locks_dir).lock_for(name)
    getattr(lock, "lock_" + mode)()
    ready.set()
    release.wait(10)
    lock.close()


def _start_holder(locks_dir, name, mode):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(locks_dir, name, mode, ready, release), daemon=True)
    p.start()
    assert ready.wait(10)
    return p, release


def test_exclusive_excludes_other_process(tmp_path):
    d = str(tmp_path / "locks")
    p, release = _start_holder(d, "/a/b", "exclusive")
    try:
        lock = FcntlLockManager(d).lock_for("/a/b@123")  # versions share the lock
        assert not lock.try_lock_exclusive()
        other = FcntlLockManager(d).lock_for("/a/c")
        assert other.try_lock_exclusive()
        other.close()
    finally:
        release.set()
        p.join(10)
    assert lock.try_lock_exclusive()
    lock.close()


def test_shared_allows_shared_not_exclusive(tmp_path):
    d = str(tmp_path / "locks")
    p, release = _start_holder(d, "/s", "shared")
    try:
        m = FcntlLockManager(d)
        reader = m.lock_for("/s")
        reader.lock_shared()  # does not block
        writer = m.lock_for("/s")
        assert not writer.try_lock_exclusive()
        reader.close()
        assert not writer.try_lock_exclusive()  # the other process still reads
    finally:
        release.set()
        p.join(10)
    assert writer.try_lock_exclusive()
    writer.close()


def test_locks_in_one_process_exclude_each_other(tmp_path):
    m = FcntlLockManager(str(tmp_path / "locks"))
    a, b = m.lock_for("/x"), m.lock_for("/x")
    a.lock_exclusive()
    assert not b.try_lock_exclusive()
    a.unlock()
    assert b.try_lock_exclusive()
    b.close()
    a.close()
    a.close()  # idempotent


def _wait_then_lock(locks_dir, go, got, release):
    go.wait(10)
    lock = FcntlLockManager(locks_dir).lock_for("/n")
    lock.lock_exclusive()  # waits on the old inode, must end on the current one
    got.set()
    release.wait(10)  # held until the parent has checked it (a fixed time could run out first)
    lock.close()


def test_delete_while_waiting_relocks_the_new_file(tmp_path):
    d = str(tmp_path / "locks")
    m = FcntlLockManager(d)
    ctx = multiprocessing.get_context("fork")
    go, got, release = ctx.Event(), ctx.Event(), ctx.Event()
    # Fork before taking the lock: a forked child would inherit (and keep) it.
    p = ctx.Process(target=_wait_then_lock, args=(d, go, got, release), daemon=True)
    p.start()
    holder = m.lock_for("/n")
    holder.lock_exclusive()
    go.set()
    time.sleep(0.3)
    holder.close(delete=True)
    assert got.wait(10)
    # The waiter holds the lock on the *current* lock file: we cannot take it.
    fresh = m.lock_for("/n")
    assert not fresh.try_lock_exclusive()
    release.set()
    p.join(10)
    assert fresh.try_lock_exclusive()
    fresh.close(delete=True)
    assert not os.path.exists(m.path_for("/n"))


def test_names_that_are_prefixes_both_lock(tmp_path):
    m = FcntlLockManager(str(tmp_path / "locks"))
    with m.lock_for("/a") as a, m.lock_for("/a/b") as b:
        a.lock_exclusive()
        b.lock_exclusive()


def test_noop():
    lock = NoOpLockManager().lock_for("/a")
    lock.lock_shared()
    lock.lock_exclusive()
    assert lock.try_lock_exclusive()
    lock.unlock()
    lock.close()


def test_a_2x_lock_file_where_a_lock_folder_goes_is_replaced(tmp_path):
    """A 2.x client kept ``locks/<name>``: its lock file of a top-level name of two hex digits
    (here ``/10``) sits where our folder of the names whose hash starts with ``10`` goes. Every
    lock of those names failed with FileExistsError (and a versioned get with it)."""
    d = tmp_path / "locks"
    d.mkdir()
    m = FcntlLockManager(str(d))
    folder = os.path.dirname(m.path_for("/p/105"))
    assert os.path.basename(folder) == "10"
    with open(folder, "w"):
        pass   # what 2.x left after a put of /10
    with m.lock_for("/p/105") as lock:
        assert lock.try_lock_exclusive()
    assert os.path.isdir(folder)
