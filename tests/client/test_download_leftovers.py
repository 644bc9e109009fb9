"""A download never leaves a temporary file in the user's folder or in the cache, even when killed.

``get`` writes into a file without a name (``O_TMPFILE``) and names it only
once complete, right before the rename (filetracker/client/_files.py); before,
a ``.NAME.RANDOM.ft-tmp`` file sat beside the destination for the whole
download, and a ``kill -9`` (or a power cut) left it there for good.  A
download into the cache is staged the same way (a ``tmp/stage.*`` file stayed
until the cache cleaner's hour had passed).
"""

import io
import os
import signal
import stat
import subprocess
import time

import pytest
import requests

from filetracker.client import _files, local_data_store
from filetracker.client._files import atomic_write_stream
from filetracker.client.local_data_store import LocalDataStore
from tests.support.delayproxy import DelayProxy
from tests.support.procs import script
from tests.support.waiting import wait_until


class WatchingStream(io.BytesIO):
    """A source that lists ``folder`` on every read (what a user would see meanwhile)."""

    def __init__(self, data, folder):
        super().__init__(data)
        self.folder = folder
        self.seen = set()

    def read(self, size=-1):
        self.seen.update(os.listdir(self.folder))
        return super().read(min(size, 1000))


def test_nothing_named_appears_beside_the_destination_while_writing(tmp_path):
    dest = tmp_path / "out.bin"
    src = WatchingStream(b"x" * 10000, tmp_path)
    assert atomic_write_stream(str(dest), src, mtime=1700000000) == 10000
    assert src.seen == set()
    assert dest.read_bytes() == b"x" * 10000 and os.stat(dest).st_mtime == 1700000000
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_failed_download_leaves_nothing(tmp_path):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 3000:
                raise ConnectionError("the server went away")
            return super().read(1000)

    with pytest.raises(ConnectionError):
        atomic_write_stream(str(tmp_path / "out.bin"), Broken(b"y" * 10000))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("without", ["unnamed-files", "naming"])
def test_without_unnamed_files_a_named_temporary_is_used(tmp_path, monkeypatch, without):
    """A filesystem without O_TMPFILE (or no /proc to name such a file) still gets the
    whole file, its version and the mode of the file it replaces."""
    if without == "unnamed-files":
        monkeypatch.setattr(_files, "_unnamed_file_beside", lambda path: None)
    else:
        monkeypatch.setattr(_files, "_name_unnamed", lambda fd, path: None)
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    os.chmod(dest, 0o640)
    src = WatchingStream(b"z" * 5000, tmp_path)
    assert atomic_write_stream(str(dest), src, mtime=1700000001) == 5000
    assert dest.read_bytes() == b"z" * 5000
    assert os.stat(dest).st_mtime == 1700000001 and stat.S_IMODE(os.stat(dest).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["out.bin"]
    if without == "unnamed-files":
        assert any(n.endswith(".ft-tmp") for n in src.seen)  # the named file, as before


def _fds_under(pid, folder):
    try:
        links = [os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)]
    except OSError:
        return []
    return [ln for ln in links if ln.startswith(str(folder) + "/")]


@pytest.mark.parametrize("without", [None, "unnamed-files", "naming"])
def test_the_cache_stages_a_download_without_a_name_until_complete(tmp_path, monkeypatch, without):
    store = LocalDataStore(str(tmp_path / "cache"))
    if without == "unnamed-files":
        monkeypatch.setattr(local_data_store, "unnamed_file_in", lambda folder: None)
    elif without == "naming":
        monkeypatch.setattr(local_data_store, "name_unnamed", lambda fd, folder, prefix: None)
    src = WatchingStream(b"s" * 5000, store.tmp_dir)
    staged = store.stage_stream(src)
    assert os.path.dirname(staged) == store.tmp_dir and os.path.basename(staged).startswith("stage.")
    assert (src.seen == set()) == (without != "unnamed-files")   # named throughout only then
    assert store.commit(staged, "/a/b.txt@1700000002") == "/a/b.txt@1700000002"
    assert open(store.path_of("/a/b.txt"), "rb").read() == b"s" * 5000
    assert os.listdir(store.tmp_dir) == []


def test_stage_file_copies_like_a_stream_and_links_when_asked(tmp_path):
    store = LocalDataStore(str(tmp_path / "cache"))
    own = tmp_path / "own.txt"
    own.write_bytes(b"mine")
    copied, linked = store.stage_file(str(own)), store.stage_file(str(own), link=True)
    assert os.stat(copied).st_ino != own.stat().st_ino and open(copied, "rb").read() == b"mine"
    assert os.stat(linked).st_ino == own.stat().st_ino
    for staged in (copied, linked):
        store.discard(staged)
    assert os.listdir(store.tmp_dir) == []


@pytest.mark.parametrize("cached", [False, True], ids=["no-cache", "through-the-cache"])
def test_get_killed_mid_download_leaves_nothing_behind(server, tmp_path, cached):
    data = os.urandom(4 << 20)
    r = requests.put(server.url + "/files/big/blob.bin", data=data,
                     params={"last_modified": "Sat, 28 Nov 2026 04:00:00 GMT"}, timeout=60)
    assert r.status_code == 200, r.text
    proxy = DelayProxy(server.port).start()
    proxy.delay = 0.05  # about 64 pieces of 64 KiB: several seconds to download
    folder = tmp_path / "downloads"
    folder.mkdir()
    cache = tmp_path / "cache"
    # into a file: written beside it (and linked into the cache once complete); to a stream
    # (here standard output, /dev/null), staged in the cache's tmp/ and served from the cache
    written_in = cache / "tmp" if cached else folder
    env = dict(os.environ, HOME=str(tmp_path), FILETRACKER_DIR=str(cache))
    no_cache = [] if cached else ["--no-cache"]
    dest = "/dev/stdout" if cached else str(folder / "blob.bin")
    proc = subprocess.Popen([script("filetracker"), "-r", proxy.url, "get", *no_cache, "/big/blob.bin", dest],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the download is under way once the process holds a file in that folder
        assert wait_until(lambda: _fds_under(proc.pid, written_in), timeout=30)
        time.sleep(0.3)
        assert proc.poll() is None, "the download ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert os.listdir(folder) == [] and os.listdir(written_in) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proxy.stop()
    # and a download left alone completes as usual
    out = folder / "again.bin"
    r = subprocess.run([script("filetracker"), "-r", server.url, "get", *no_cache, "/big/blob.bin", str(out)],
                       env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data and os.listdir(folder) == ["again.bin"]
    if cached:
        assert os.listdir(cache / "tmp") == []
