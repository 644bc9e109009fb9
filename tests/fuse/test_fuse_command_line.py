"""What ``filetracker-fuse`` says: when it cannot mount, and in its log.

A dead mount (daemon and its ``fusermount3`` helper killed) is reported as
broken, not missing; an unusable cache folder gives one line with the
reason in the background and in the foreground; a relative ``--log`` is
taken from where the command was run, although the daemon works from ``/``.
The log: one line (no traceback) for an upload refused or failing at
release; no urllib3 "pool is full" noise from parallel readers; a warning
naming a file still open for writing when the daemon is stopped.
"""

import errno
import os
import signal
import subprocess
import time
import uuid

from filetracker.client import Client
from tests.fuse.conftest import unmount
from tests.fuse.test_fuse_semantics import pids_serving
from tests.support.procs import script


def _helper_pids(mountpoint):
    """The ``fusermount3 --auto-unmount`` helpers of ``mountpoint`` (our mount's children)."""
    return pids_serving(mountpoint, b"fusermount3")


def test_dead_mount_is_reported_as_broken(server, mount_factory):
    m = mount_factory(server.url)
    helpers = _helper_pids(m.path)
    assert helpers, "no fusermount3 helper found"
    for pid in helpers:  # first, or it unmounts when the daemon dies
        os.kill(pid, signal.SIGKILL)
    os.kill(m.service.pid, signal.SIGKILL)
    m.service.proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while True:
        try:
            os.stat(m.path)
        except OSError as e:
            assert e.errno == errno.ENOTCONN
            break
        assert time.monotonic() < deadline, "the mount did not die"
        time.sleep(0.05)
    proc = subprocess.run([script("filetracker-fuse"), m.path, "--url", server.url, "--cache-dir", m.cache_dir],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "busy or broken" in proc.stderr and "fusermount3 -uz" in proc.stderr, proc.stderr


def test_unusable_cache_folder_gives_one_line(server, tmp_path):
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    argv = [script("filetracker-fuse"), mnt, "--url", server.url, "--cache-dir", "/proc/nope"]
    for extra in ([], ["--foreground"]):
        proc = subprocess.run(argv + extra, capture_output=True, text=True, timeout=30)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert "cache folder /proc/nope" in lines[0] and "No such file or directory" in lines[0], lines


def test_relative_log_is_taken_from_the_working_folder(server, tmp_path):
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    name = "rel-%s.log" % uuid.uuid4().hex
    try:
        proc = subprocess.run([script("filetracker-fuse"), mnt, "--url", server.url, "--cache-dir",
                               str(tmp_path / "cache"), "--log", name],
                              capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        pids = pids_serving(mnt)
        assert len(pids) == 1
        # The daemon's output goes to the log given (it chdir'ed to "/" since).
        assert os.readlink("/proc/%d/fd/2" % pids[0]) == str(tmp_path / name)
    finally:
        unmount(mnt)
        deadline = time.monotonic() + 10
        while pids_serving(mnt) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids_serving(mnt):
            os.kill(pid, signal.SIGKILL)
        if os.path.exists("/" + name):  # where the old code put it
            os.unlink("/" + name)


def wait_for_log(m, text, timeout=10.0):
    """The mount's log once it contains ``text``."""
    deadline = time.monotonic() + timeout
    while text not in m.log_tail(1 << 20):
        assert time.monotonic() < deadline, "%r not logged:\n%s" % (text, m.log_tail())
        time.sleep(0.05)
    return m.log_tail(1 << 20)


def test_upload_failing_at_release_logs_one_line(server, mount_factory):
    m = mount_factory(server.url, args=["--timeout", "2"])
    fd = os.open(m.p("new.txt"), os.O_WRONLY | os.O_CREAT)  # empty: uploaded at release
    server.stop()
    os.close(fd)
    log = wait_for_log(m, "upload of /new.txt at release failed")
    assert "Traceback" not in log, log


def test_parallel_readers_do_not_overflow_the_connection_pool(server, mount_factory, tmp_path):
    client = Client(cache_dir=str(tmp_path / "other"), remote_url=server.url)
    for i in range(16):
        data = os.urandom(3 << 20)
        (tmp_path / "src").write_bytes(data)
        client.put_file("/pool/f%d" % i, str(tmp_path / "src"), to_local_store=False)
    m = mount_factory(server.url)
    assert len(os.listdir(m.p("pool"))) == 16
    # 16 processes at once, as a shell starts them (each open downloads into the cache).
    proc = subprocess.run(["bash", "-c", "for i in $(seq 0 15); do cat %s/f$i > /dev/null & done; wait"
                           % m.p("pool")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert open(m.p("pool/f15"), "rb").read() == data
    assert "Connection pool is full" not in m.log_tail(1 << 20)


def test_stopping_with_a_file_open_for_writing_says_so(server, mount_factory):
    m = mount_factory(server.url)
    fd = os.open(m.p("open.txt"), os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"unsaved\n")
        os.kill(m.service.pid, signal.SIGTERM)
        m.service.proc.wait(timeout=20)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # the mount is gone
    log = wait_for_log(m, "/open.txt")
    assert "unsaved changes are lost" in log, log
