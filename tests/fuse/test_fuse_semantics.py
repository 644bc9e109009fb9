"""The mount's write-side semantics and its command line, against our server.

Rewrites, appends, truncate, rename (editor style), unlink, mkdir/rmdir,
bad names, a killed writer (nothing partial uploaded), read-only mounts,
shared downloads, daemonisation and clean exits.
"""

import errno
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import requests

from filetracker.client import Client
from tests.fuse.conftest import is_mounted, unmount
from tests.fuse.proxy import CountingProxy
from tests.support.procs import script


def remote(server, name):
    """The stored bytes of ``name`` (None when absent)."""
    r = requests.get(server.url + "/files" + name, timeout=10)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.content


def sh(cmd, **kw):
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, **kw)


def eventually(fn, timeout=15.0):
    """Poll ``fn()`` until it is truthy (``release``, which may upload, runs after ``close`` returned)."""
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "condition not met within %ss" % timeout
        time.sleep(0.05)


def test_rewrites_appends_truncate(server, mount_factory):
    m = mount_factory(server.url)
    f = m.p("/w/file.txt")
    os.makedirs(m.p("w"))
    # Quick rewrites within one second: the last one wins everywhere.
    for text in ("one\n", "two\n", "three\n"):
        assert sh("echo -n '%s' > %s" % (text.strip() + "\n", f)).returncode == 0
    assert open(f).read() == "three\n" and remote(server, "/w/file.txt") == b"three\n"
    assert sh("echo more >> %s" % f).returncode == 0
    assert remote(server, "/w/file.txt") == b"three\nmore\n"
    os.truncate(f, 3)
    assert remote(server, "/w/file.txt") == b"thr" and os.path.getsize(f) == 3
    with open(f, "r+b") as fh:  # in-place update through one handle
        fh.seek(1)
        fh.write(b"XY")
    assert remote(server, "/w/file.txt") == b"tXY"
    assert sh(": > %s" % f).returncode == 0  # an emptied file is uploaded at release
    eventually(lambda: remote(server, "/w/file.txt") == b"")
    assert os.path.getsize(f) == 0
    # touch of a new file creates an empty one; chmod and touch -d succeed.
    assert sh("touch %s && chmod 600 %s && touch -d @1700000000 %s" % (m.p("w/t"), m.p("w/t"), m.p("w/t"))
              ).returncode == 0
    eventually(lambda: remote(server, "/w/t") == b"")


def test_rename_unlink_and_folders(server, mount_factory):
    m = mount_factory(server.url)
    os.makedirs(m.p("e/sub"))
    assert sorted(os.listdir(m.p("e"))) == ["sub"]  # an empty folder lives in the mount
    # Editor style: write a temporary name, then rename over the real one.
    with open(m.p("e/.doc.swp"), "w") as f:
        f.write("draft 1\n")
    os.rename(m.p("e/.doc.swp"), m.p("e/doc.txt"))
    assert remote(server, "/e/doc.txt") == b"draft 1\n" and remote(server, "/e/.doc.swp") is None
    with open(m.p("e/.doc.swp"), "w") as f:
        f.write("draft 2\n")
    os.rename(m.p("e/.doc.swp"), m.p("e/doc.txt"))
    assert open(m.p("e/doc.txt")).read() == "draft 2\n" and remote(server, "/e/doc.txt") == b"draft 2\n"
    # A stored file moves across folders (put new + delete old).
    os.rename(m.p("e/doc.txt"), m.p("e/sub/moved.txt"))
    assert remote(server, "/e/sub/moved.txt") == b"draft 2\n" and remote(server, "/e/doc.txt") is None
    assert os.listdir(m.p("e/sub")) == ["moved.txt"]
    # A folder with stored files: EXDEV (mv falls back to copy + delete).
    with pytest.raises(OSError) as exc:
        os.rename(m.p("e/sub"), m.p("e/sub2"))
    assert exc.value.errno == errno.EXDEV
    assert sh("mv %s %s" % (m.p("e/sub"), m.p("e/sub2"))).returncode == 0
    assert remote(server, "/e/sub2/moved.txt") == b"draft 2\n" and remote(server, "/e/sub/moved.txt") is None
    # rmdir: not while it holds files; rm -r removes everything.
    with pytest.raises(OSError) as exc:
        os.rmdir(m.p("e/sub2"))
    assert exc.value.errno == errno.ENOTEMPTY
    os.unlink(m.p("e/sub2/moved.txt"))
    assert remote(server, "/e/sub2/moved.txt") is None
    os.rmdir(m.p("e/sub2"))
    os.makedirs(m.p("e/x/y"))
    with open(m.p("e/x/y/z"), "w") as f:
        f.write("z")
    assert sh("rm -r %s" % m.p("e")).returncode == 0
    assert not os.path.exists(m.p("e")) and remote(server, "/e/x/y/z") is None


def test_errors(server, mount_factory):
    m = mount_factory(server.url)
    with pytest.raises(OSError) as exc:
        open(m.p("bad@name"), "w")
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        open(m.p("missing/file"))
    with pytest.raises(IsADirectoryError):
        os.makedirs(m.p("d"))
        open(m.p("d"), "w")
    with pytest.raises(FileExistsError):
        os.mkdir(m.p("d"))


def test_killed_writer_uploads_nothing(server, mount_factory, tmp_path):
    client = Client(cache_dir=str(tmp_path / "c"), remote_url=server.url)
    old = tmp_path / "old"
    old.write_bytes(b"old version\n")
    client.put_file("/k/file.bin", str(old), to_local_store=False)
    m = mount_factory(server.url)
    writer = (
        "import os, sys, time\n"
        "f = open(sys.argv[1], 'wb')\n"
        "for i in range(1000):\n"
        "    f.write(b'x' * 65536); f.flush()\n"
        "    if i == 10: print('writing', flush=True)\n"
        "    time.sleep(0.01)\n"
    )
    for target in (m.p("k/file.bin"), m.p("k/new.bin")):
        proc = subprocess.Popen([sys.executable, "-c", writer, target], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"writing"
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    m.wait_writers_released()  # release is asynchronous
    assert remote(server, "/k/file.bin") == b"old version\n"
    assert remote(server, "/k/new.bin") is None


def test_read_only_mount(server, mount_factory, tmp_path):
    client = Client(cache_dir=str(tmp_path / "c"), remote_url=server.url)
    src = tmp_path / "src"
    src.write_bytes(b"read me\n")
    client.put_file("/ro/file", str(src), to_local_store=False)
    m = mount_factory(server.url, args=["--read-only"])
    assert open(m.p("ro/file"), "rb").read() == b"read me\n"
    for action in (lambda: open(m.p("ro/new"), "w"), lambda: os.unlink(m.p("ro/file")),
                   lambda: os.mkdir(m.p("ro/dir")), lambda: open(m.p("ro/file"), "a")):
        with pytest.raises(OSError) as exc:
            action()
        assert exc.value.errno == errno.EROFS
    assert remote(server, "/ro/file") == b"read me\n"


def test_concurrent_readers_share_one_download(server, mount_factory, tmp_path):
    client = Client(cache_dir=str(tmp_path / "c"), remote_url=server.url)
    data = os.urandom(8 << 20)
    (tmp_path / "src").write_bytes(data)
    client.put_file("/share/big.bin", str(tmp_path / "src"), to_local_store=False)
    target = urllib.parse.urlsplit(server.url)
    proxy = CountingProxy((target.hostname, target.port))
    try:
        m = mount_factory(proxy.url)
        os.stat(m.p("share/big.bin"))
        results = []

        def read():
            with open(m.p("share/big.bin"), "rb") as f:
                results.append(f.read() == data)

        threads = [threading.Thread(target=read) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [True] * 6
        m.stop()
        assert proxy.downstream_bytes < 1.5 * len(data), proxy.downstream_bytes
    finally:
        proxy.close()
    # ... and the download landed in the Client's cache, shared with Python users.
    shared = Client(cache_dir=m.cache_dir, remote_url=server.url)
    assert shared.local_store.exists("/share/big.bin")


def pids_serving(mountpoint, program=b"filetracker-fuse"):
    """Pids of the processes running ``program`` (in any argument) with ``mountpoint`` as an argument."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if mountpoint.encode() in argv and any(program in a for a in argv):
                pids.append(int(pid))
    return pids



def test_daemon_mode_and_command_line_errors(server, tmp_path):
    exe = script("filetracker-fuse")
    mnt = str(tmp_path / "dmnt")
    os.makedirs(mnt)
    base = [exe, mnt, "--url", server.url, "--cache-dir", str(tmp_path / "dc")]
    try:
        proc = subprocess.run(base, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mnt) and len(pids_serving(mnt)) == 1
        # Busy mountpoint.
        again = subprocess.run(base, capture_output=True, text=True, timeout=30)
        assert again.returncode == 1 and "busy" in again.stderr
        subprocess.run(["fusermount3", "-u", mnt], check=True)
        deadline = time.monotonic() + 10
        while pids_serving(mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pids_serving(mnt) and not is_mounted(mnt)
    finally:
        unmount(mnt)
        for pid in pids_serving(mnt):
            os.kill(pid, signal.SIGKILL)
    missing = subprocess.run([exe, str(tmp_path / "nope"), "--url", server.url], capture_output=True, text=True)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    down = subprocess.run([exe, mnt, "--url", "http://127.0.0.1:9", "--timeout", "2"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "does not answer" in down.stderr and not is_mounted(mnt)
    for log in (str(tmp_path / "no-such-folder" / "x.log"), str(tmp_path)):  # were tracebacks
        bad = subprocess.run(base + ["--log", log], capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and bad.stderr.startswith("filetracker-fuse: cannot open log file %s: " % log)
        assert len(bad.stderr.splitlines()) == 1 and not is_mounted(mnt), bad.stderr
    bad = subprocess.run(base + ["--timeout", "nan"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "not a finite number of seconds: 'nan'" in bad.stderr and not is_mounted(mnt)


def test_sigterm_in_foreground_unmounts(server, mount_factory):
    m = mount_factory(server.url)
    with open(m.p("f.txt"), "w") as f:
        f.write("x")
    os.kill(m.service.pid, signal.SIGTERM)
    m.service.proc.wait(timeout=10)
    assert m.service.proc.returncode == 0
    assert not is_mounted(m.path)
    assert remote(server, "/f.txt") == b"x"


def test_ranged_reads_random_offsets_and_stale_version(server, mount_factory, tmp_path):
    """Files above --range-threshold: random preads are exact; a replaced version gives ESTALE."""
    import random

    client = Client(cache_dir=str(tmp_path / "c"), remote_url=server.url)
    data = os.urandom(3 << 20)
    (tmp_path / "src").write_bytes(data)
    version = int(client.put_file("/rg/file.bin", str(tmp_path / "src"), to_local_store=False).rpartition("@")[2])
    m = mount_factory(server.url, args=["--range-threshold", "64K"])
    rnd = random.Random(1)
    fd = os.open(m.p("rg/file.bin"), os.O_RDONLY)
    try:
        for _ in range(40):
            off = rnd.randrange(0, 1 << 20)  # the first MiB; the rest stays unfetched
            n = rnd.randrange(1, 100000)
            assert os.pread(fd, n, off) == data[off:off + n]
        assert os.pread(fd, 10, len(data) - 3) == data[-3:]
        # Nothing of it went to the Client's cache (read by ranges).
        assert not os.path.exists(os.path.join(m.cache_dir, "files", "rg", "file.bin"))
        (tmp_path / "src2").write_bytes(b"new")
        client.put_file("/rg/file.bin@%d" % (version + 5), str(tmp_path / "src2"), to_local_store=False)
        # Blocks not fetched yet come from another version now: refused, not mixed.
        with pytest.raises(OSError) as exc:
            for off in range(1 << 20, len(data) - (256 << 10), 256 << 10):
                os.pread(fd, 4096, off)
        assert exc.value.errno == errno.ESTALE
    finally:
        os.close(fd)
    deadline = time.monotonic() + 3
    while True:  # a new open reads the new version
        try:
            if open(m.p("rg/file.bin"), "rb").read() == b"new":
                break
        except OSError as e:
            assert e.errno == errno.ESTALE
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.skipif(not __import__("shutil").which("rsync"), reason="rsync is not installed")
def test_rsync_into_the_mount(server, mount_factory, tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "one.txt").write_bytes(b"one\n")
    (src / "a" / "b" / "two.bin").write_bytes(os.urandom(100000))
    m = mount_factory(server.url)
    for run in range(2):  # the second run replaces one file: temporary name + rename again
        # (another size: rsync's quick check skips same-size files changed in the same second)
        (src / "a" / "one.txt").write_bytes(b"one, changed %d\n" % (10 ** run))
        proc = sh("rsync -a %s/ %s/" % (src, m.p("r")))
        assert proc.returncode == 0, proc.stderr
        assert remote(server, "/r/a/one.txt") == (src / "a" / "one.txt").read_bytes()
        assert remote(server, "/r/a/b/two.bin") == (src / "a" / "b" / "two.bin").read_bytes()
    assert sh("diff -r %s %s" % (src, m.p("r"))).returncode == 0
