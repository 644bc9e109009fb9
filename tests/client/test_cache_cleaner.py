"""filetracker-cache-cleaner: exact parsing, LRU choice, locked files kept, the command line."""

import io
import os
import subprocess

import pytest

from filetracker.cli.cache_cleaner import (
    choose_victims,
    clean_once,
    delete_unlocked,
    parse_interval,
    parse_size,
    scan,
)
from filetracker.client.local_data_store import LocalDataStore
from filetracker.client.lock_manager import FcntlLockManager
from tests.support.procs import script


@pytest.mark.parametrize("text, value", [
    ("1G512M", 2**30 + 512 * 2**20), ("10B", 10), ("1K", 1024), ("2T", 2 * 2**40),
    ("1M1K1B", 2**20 + 1025), (" 3G ", 3 * 2**30), ("0B", 0),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text, value", [
    ("1h30m", 5400), ("1h", 3600), ("45s", 45), ("2d", 172800), ("1d1h1m1s", 90061),
])
def test_parse_interval(text, value):
    assert parse_interval(text) == value


@pytest.mark.parametrize("text", ["", "12", "G", "1X", "1g", "1.5G", "-1G", "1G5"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


class E:
    def __init__(self, name, size, used):
        self.name, self.size, self.used = name, size, used


def test_choose_victims_exact():
    entries = [E("a", 40, 1), E("b", 30, 3), E("c", 20, 2), E("d", 10, 4)]
    assert choose_victims(entries, 101, 50) == []  # below the limit: nothing
    assert [e.name for e in choose_victims(entries, 100, 50)] == ["a", "c"]  # at the limit (as 2.x): 100 -> 60 -> 40
    assert [e.name for e in choose_victims(entries, 99, 50)] == ["a", "c"]  # 100 -> 60 -> 40 < 49.5
    # the kept files stay *below* the level: 40 (b+d) is not < 40, so b goes too (as 2.x)
    assert [e.name for e in choose_victims(entries, 80, 50)] == ["a", "c", "b"]
    assert [e.name for e in choose_victims(entries, 99, 0)] == ["a", "c", "b", "d"]
    # ties on recency: the bigger file goes first
    assert [e.name for e in choose_victims([E("s", 1, 5), E("l", 9, 5)], 5, 50)] == ["l"]


def fill(cache_dir, n, size):
    store = LocalDataStore(cache_dir)
    for i in range(n):
        store.add_stream("/f/%d@%d" % (i, 1000 + i), io.BytesIO(b"x" * size))
        path = store.path_of("/f/%d" % i)
        # recency = max(atime, ctime): ctime is "now" for all, so set atime in the future
        os.utime(path, (4_000_000_000 + i, 1000 + i))
    return store


def test_clean_once_deletes_lru_and_skips_locked(tmp_path):
    cache = str(tmp_path / "cache")
    store = fill(cache, 10, 1000)  # 10 000 bytes
    locks = FcntlLockManager(os.path.join(cache, "locks"))
    busy = locks.lock_for("/f/0")
    busy.lock_shared()  # someone reads the least recently used file
    deleted, nbytes, skipped = clean_once([str(tmp_path / "ca*")], 5000, 50)
    busy.close()
    left = sorted(e.name for e in store.list_files())
    assert (deleted, nbytes, skipped) == (8, 8000, 1)
    assert left == ["/f/0@1000", "/f/9@1009"]
    assert clean_once([cache], 5000, 50) == (0, 0, 0)  # under the limit now


def test_command_line_once(tmp_path):
    cache = str(tmp_path / "c1")
    fill(cache, 4, 1024)
    r = subprocess.run([script("filetracker-cache-cleaner"), "-c", str(tmp_path / "c*"), "-s", "2K",
                        "-i", "1h30m", "-p", "50", "--once", "-q"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # 4 KiB >= 2K: clean until less than 1 KiB is left, so no 1 KiB file stays (as 2.x)
    assert len(LocalDataStore(cache).list_files()) == 0
    r = subprocess.run([script("filetracker-cache-cleaner"), "-c", cache, "--once"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cache-size-limit" in r.stderr
    r = subprocess.run([script("filetracker-cache-cleaner"), "-s", "12Q", "--once"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown unit" in r.stderr


def test_a_file_replaced_after_the_scan_stays(tmp_path):
    """The cleaner deletes the version it scanned: a client that cached a newer version between
    the scan and the delete keeps it (the unversioned delete removed it)."""
    cache = str(tmp_path / "c")
    store = LocalDataStore(cache)
    store.add_stream("/race/f@1000", io.BytesIO(b"old"))
    [entry] = scan([cache])
    assert (entry.name, entry.version) == ("/race/f", 1000)
    store.add_stream("/race/f@2000", io.BytesIO(b"new"))
    assert delete_unlocked(entry)
    assert [e.name for e in store.list_files()] == ["/race/f@2000"]


def test_quiet_still_logs_errors(tmp_path):
    """-q keeps warnings and errors, as the 2.x tool did (a cron job hears of failures)."""
    cache = tmp_path / "c1"
    fill(str(cache), 2, 1024)
    assert not (cache / "locks").exists()
    (cache / "locks").write_text("not a folder")   # every lock fails
    r = subprocess.run([script("filetracker-cache-cleaner"), "-c", str(cache), "-s", "1B", "--once", "-q"],
                       capture_output=True, text=True, timeout=30)
    assert "ERROR" in r.stderr or "WARNING" in r.stderr, (r.returncode, r.stderr)
    assert "Scanning disk" not in r.stderr
