"""The fast read path (``read_buf`` naming the cached file's descriptor, kernel
page cache kept across opens of one version) reads the right bytes, and the
kernel's cache never serves an old version of a name after another client
replaced it (issue 9, acceptance 2 with the cache on)."""

import ctypes
import os
import random
import subprocess
import threading
import time

import pytest

from filetracker.client import Client
from filetracker.fuse import fastread


@pytest.mark.no_fuse_needed
def test_reply_fd_fills_a_bufvec():
    holder = ctypes.c_void_p(0)
    bufpp = ctypes.pointer(holder)
    fastread.reply_fd(bufpp, 7, 1 << 33, 524288)
    assert holder.value
    size, flags, fd, pos = fastread.read_bufvec(bufpp)
    assert (size, fd, pos) == (524288, 7, 1 << 33)
    assert flags == fastread.FUSE_BUF_IS_FD | fastread.FUSE_BUF_FD_SEEK
    raw = ctypes.string_at(holder.value, 24)
    assert raw[:8] == (1).to_bytes(8, "little") and raw[8:24] == bytes(16)  # count 1, idx 0, off 0
    fastread.free_bufvec(bufpp)
    fastread.reply_fd(bufpp, 7, 100, 0)  # an empty answer is a memory buffer of 0 bytes
    assert fastread.read_bufvec(bufpp) == (0, 0, -1, 0)
    fastread.free_bufvec(bufpp)


@pytest.mark.no_fuse_needed
def test_pin_thread_state_is_idempotent_in_python_threads():
    def work():
        for _ in range(3):
            fastread.pin_thread_state()

    t = threading.Thread(target=work)
    t.start()
    t.join(5)
    assert not t.is_alive()
    fastread.pin_thread_state()


def _put(client, tmp_path, name, data, version):
    src = tmp_path / ("src-%d" % version)
    src.write_bytes(data)
    return client.put_file("%s@%d" % (name, version), str(src), to_local_store=False)


def test_cached_reads_are_byte_exact(server, mount_factory, tmp_path):
    client = Client(cache_dir=str(tmp_path / "other"), remote_url=server.url)
    data = os.urandom((5 << 20) + 12345)  # not a multiple of pages or requests
    _put(client, tmp_path, "/fr/a.bin", data, 1700000000)
    m = mount_factory(server.url)
    path = m.p("fr/a.bin")
    # Read requests of 512 KiB (spliced replies fit a pipe); a 2 MiB read-ahead when root.
    with open("/proc/self/mountinfo") as f:
        line = next(x for x in f if x.split()[4] == m.path)
    assert "max_read=524288" in line
    if os.geteuid() == 0:
        major, minor = line.split()[2].split(":")
        ra_path = "/sys/class/bdi/%s:%s/read_ahead_kb" % (major, minor)
        deadline = time.monotonic() + 15
        while open(ra_path).read().strip() != "2048":  # set by a thread right after mounting
            assert time.monotonic() < deadline
            time.sleep(0.05)
    for _ in range(2):  # first open: from the daemon; second: the kernel's cache may answer
        with open(path, "rb") as f:
            assert f.read() == data
    rnd = random.Random(5)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(50):
            off = rnd.randrange(0, len(data) + 100)
            n = rnd.choice([1, 4095, 4096, 65536, 524288, 1 << 20, 3 << 20])
            assert os.pread(fd, n, off) == data[off:off + n]
        assert os.pread(fd, 10, len(data)) == b""
        assert os.pread(fd, 10, len(data) + 10 ** 6) == b""
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drop the kernel's pages: the daemon again
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    # Read through a mount handle that is also being written (staged file).
    with open(m.p("fr/w.bin"), "wb") as w:
        w.write(data[:100000])
        w.flush()
        with open(m.p("fr/w.bin"), "rb") as r:
            assert r.read() == data[:100000]
    assert open(m.p("fr/w.bin"), "rb").read() == data[:100000]


def test_kernel_cache_never_serves_a_replaced_version(server, mount_factory, tmp_path):
    """Same size, same name, new content from another client: visible within the attribute timeout."""
    other = Client(cache_dir=str(tmp_path / "other"), remote_url=server.url)
    size = (1 << 20) + 7
    old, new = b"o" * size, b"n" * size
    _put(other, tmp_path, "/kc/f.bin", old, 1700000000)
    m = mount_factory(server.url, args=["--attr-timeout", "1"])
    path = m.p("kc/f.bin")
    for _ in range(3):  # the version is now in the kernel's page cache, kept across opens
        assert open(path, "rb").read() == old
    held = open(path, "rb")  # an open handle keeps reading the version it opened
    try:
        _put(other, tmp_path, "/kc/f.bin", new, 1700000100)
        deadline = time.monotonic() + 1.0 + 3  # the attribute timeout, plus slack for a busy machine
        while True:
            got = open(path, "rb").read()
            assert got in (old, new)
            if got == new:
                break
            assert time.monotonic() < deadline, "old content served after the attribute timeout"
            time.sleep(0.05)
        for _ in range(2):
            assert open(path, "rb").read() == new
        # cat and a fresh process see the new content too.
        assert subprocess.run(["cat", path], capture_output=True, check=True).stdout == new
        assert held.read(10) in (old[:10], new[:10])
    finally:
        held.close()
    # Back to the old content under a newer version: the cache is dropped again.
    _put(other, tmp_path, "/kc/f.bin", old, 1700000200)
    deadline = time.monotonic() + 1.0 + 3  # as above
    while open(path, "rb").read() != old:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _held_while_replaced(server, mount_factory, tmp_path, name, size):
    """Store ``name`` as P bytes, open it in a mount, replace it by Q bytes from another client
    and wait until the mount sees the new version.  Returns ``(path, held descriptor of P)``."""
    other = Client(cache_dir=str(tmp_path / "other"), remote_url=server.url)
    _put(other, tmp_path, name, b"P" * size, 1700000000)
    m = mount_factory(server.url, args=["--attr-timeout", "0.4"])
    path = m.p(name.lstrip("/"))
    held = os.open(path, os.O_RDONLY)  # the old version, nothing read yet
    try:
        _put(other, tmp_path, name, b"Q" * size, 1700000100)
        deadline = time.monotonic() + 3
        while os.stat(path).st_mtime != 1700000100:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    except BaseException:
        os.close(held)
        raise
    return path, held


def test_old_handle_reading_after_a_new_open_leaves_no_old_bytes(server, mount_factory, tmp_path):
    """A handle of the old version reads after the new version's open: the next open drops its pages."""
    path, held = _held_while_replaced(server, mount_factory, tmp_path, "/mx/w.txt", 4 << 20)
    try:
        os.close(os.open(path, os.O_RDONLY))  # the new version opened, nothing read
        assert os.pread(held, 8, 0) == b"P" * 8  # the old handle refills the pages with its bytes
    finally:
        os.close(held)
    for _ in range(2):
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(-4, os.SEEK_END)
            assert (head, f.read(4)) == (b"QQQQ", b"QQQQ")


def test_an_open_beside_an_old_handle_never_reads_its_bytes(server, mount_factory, tmp_path):
    """The old handle reads *after* the new open: the new handle, opened while the old one is
    open, bypasses the shared page cache, so it reads the new version whatever the old one did."""
    path, held = _held_while_replaced(server, mount_factory, tmp_path, "/mx2/w.txt", 1 << 20)
    try:
        new = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(held, 4096, 0) == b"P" * 4096   # the old handle fills the pages first
            assert os.pread(new, 4096, 0) == b"Q" * 4096
        finally:
            os.close(new)
    finally:
        os.close(held)


def test_worker_threads_stay_bounded(server, mount_factory, tmp_path):
    """Parallel readers do not make the daemon grow threads without bound."""
    client = Client(cache_dir=str(tmp_path / "other"), remote_url=server.url)
    data = os.urandom(300000)
    for i in range(8):
        _put(client, tmp_path, "/th/f%d" % i, data, 1700000000 + i)
    m = mount_factory(server.url)

    def reader(i):
        for _ in range(5):
            with open(m.p("th/f%d" % i), "rb") as f:
                assert f.read() == data

    for _ in range(3):
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    pid = m.service.proc.pid
    count = len(os.listdir("/proc/%d/task" % pid))
    assert count <= 40, count  # max_threads workers + our helper threads


def test_direct_io_above_a_size(server, mount_factory, tmp_path):
    """``--direct-io-above``: larger files bypass the kernel's page cache, smaller ones keep it."""
    import mmap

    client = Client(cache_dir=str(tmp_path / "other"), remote_url=server.url)
    big, small = os.urandom((2 << 20) + 333), os.urandom(100000)
    _put(client, tmp_path, "/dio/big", big, 1700000000)
    _put(client, tmp_path, "/dio/small", small, 1700000000)
    m = mount_factory(server.url, args=["--direct-io-above", "1M"])
    for _ in range(2):
        assert open(m.p("dio/big"), "rb").read() == big
        assert open(m.p("dio/small"), "rb").read() == small
    rnd = random.Random(9)
    with open(m.p("dio/big"), "rb", buffering=0) as f:
        for _ in range(30):
            off = rnd.randrange(0, len(big) + 10)
            n = rnd.choice([1, 100, 4096, 70000, 1 << 20, 3 << 20])
            assert os.pread(f.fileno(), n, off) == big[off:off + n]
        # A private mapping works with direct I/O (a shared one needs a libfuse
        # that offers FUSE_DIRECT_IO_ALLOW_MMAP: not 3.14).
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as mm:
            assert mm[:1000] == big[:1000] and mm[-5:] == big[-5:]
    with open(m.p("dio/small"), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert mm[:] == small  # below the size: page cache, shared mappings work
    # A replaced version shows at once on the next open after the attribute timeout.
    new = os.urandom(len(big))
    _put(client, tmp_path, "/dio/big", new, 1700000100)
    deadline = time.monotonic() + 1.0 + 3  # the attribute timeout (1 s by default), plus slack
    while open(m.p("dio/big"), "rb").read() != new:
        assert time.monotonic() < deadline
        time.sleep(0.05)
