"""FUSE benchmark (issue 9, item 6; not a test): the mount next to the local disk.

Starts our ``filetracker-server`` and a ``filetracker-fuse`` mount on
127.0.0.1 (own sessions, stopped by process group, always unmounted), then
prints side by side:

- reading a cached 256 MiB file (written through the mount, so the versioned
  file is in the Client's cache): the cache file itself from the local disk
  vs the same through the mount, cold (pages evicted with
  ``posix_fadvise(DONTNEED)``) and warm (the local file in the page cache;
  through the mount: the daemon serves from the warm file, or the kernel
  keeps the mount's own page cache because the version did not change);
- ``ls -l`` of a folder of 2,000 files: a local folder vs the mount, cold
  (one listing + concurrent HEADs) and warm (within the attribute timeout).

    python bench/fuse_bench.py [--size-mib 256] [--files 2000] [--keep DIR]
"""

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.procs import Service, free_port, script  # noqa: E402

MIB = 1 << 20


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def timed(fn, repeat=1):
    """Best wall time of ``repeat`` runs of ``fn``."""
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        took = time.perf_counter() - t
        best = took if best is None else min(best, took)
    return best


def read_all(path, bufsize=1 << 20):
    with open(path, "rb", buffering=0) as f:
        while f.read(bufsize):
            pass


def drop_page_cache(path):
    """Evict one file's clean pages (so the next read comes from the disk or the daemon)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def ls_l(path):
    subprocess.run(["ls", "-l", path], stdout=subprocess.DEVNULL, check=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = p.parse_args(argv)

    work = args.keep or tempfile.mkdtemp(prefix="fuse-bench-")
    os.makedirs(work, exist_ok=True)
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    mnt = os.path.join(work, "mnt")
    cache = os.path.join(work, "cache")
    os.makedirs(mnt, exist_ok=True)
    server = Service([script("filetracker-server"), "--dir", os.path.join(work, "data"), "--port", str(port),
                      "--log-level", "WARNING"], os.path.join(work, "server.log"), ready_url=url + "/version/")
    mount = None
    rows = []
    try:
        server.start()

        def start_mount():
            svc = Service([script("filetracker-fuse"), mnt, "--url", url, "--cache-dir", cache, "--foreground",
                           "--log", os.path.join(work, "fuse.log")], os.path.join(work, "fuse.out")).start()
            deadline = time.monotonic() + 20
            while not is_mounted(mnt):
                if time.monotonic() > deadline or not svc.alive():
                    raise RuntimeError("mount failed: " + svc.log_tail())
                time.sleep(0.05)
            return svc

        mount = start_mount()

        # -- a cached 256 MiB file ----------------------------------------------------
        src = os.path.join(work, "big.src")
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MIB))
        t = time.perf_counter()
        shutil.copyfile(src, os.path.join(mnt, "big.bin"))
        write_s = time.perf_counter() - t
        os.unlink(src)
        time.sleep(1.0)  # release (asynchronous) hands the staged file to the cache
        cached = os.path.join(cache, "files", "big.bin")
        assert os.path.exists(cached), "the file did not reach the cache"
        size = os.path.getsize(cached)
        through = os.path.join(mnt, "big.bin")
        read_all(through)  # the mount knows the version: later opens may keep the page cache
        local_cold = timed(lambda: (drop_page_cache(cached), read_all(cached)), repeat=2)
        local_warm = timed(lambda: read_all(cached), repeat=3)
        mount_cold = timed(lambda: (drop_page_cache(cached), drop_page_cache(through), read_all(through)), repeat=2)
        mount_first = timed(lambda: (drop_page_cache(through), read_all(through)), repeat=3)
        mount_again = timed(lambda: read_all(through), repeat=3)
        mb = size / MIB
        rows.append(("read %d MiB, local disk, cold" % mb, local_cold, mb / local_cold, 1.0))
        rows.append(("read %d MiB, mount, cold" % mb, mount_cold, mb / mount_cold, local_cold / mount_cold))
        rows.append(("read %d MiB, local disk, page cache" % mb, local_warm, mb / local_warm, 1.0))
        rows.append(("read %d MiB, mount, cache file warm" % mb, mount_first, mb / mount_first,
                     local_warm / mount_first))
        rows.append(("read %d MiB, mount, kernel cache kept" % mb, mount_again, mb / mount_again,
                     local_warm / mount_again))
        rows.append(("write %d MiB into the mount (cp)" % mb, write_s, mb / write_s, None))

        # -- ls -l of 2,000 files -------------------------------------------------------
        local_dir = os.path.join(work, "local-folder")
        os.makedirs(local_dir, exist_ok=True)
        session = requests.Session()

        def put(i):
            name = "/many/file%05d.txt" % i
            with open(os.path.join(local_dir, "file%05d.txt" % i), "wb") as f:
                f.write(b"x" * (i % 100))
            r = session.put(url + "/files" + name, data=b"x" * (i % 100),
                            params={"last_modified": "Tue, 24 Nov 2026 20:00:00 -0000"}, timeout=30)
            r.raise_for_status()

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(args.files)))
        ls_l(local_dir)
        ls_local = timed(lambda: ls_l(local_dir), repeat=3)
        mount.stop()
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        mount = start_mount()  # fresh attribute caches
        ls_cold = timed(lambda: ls_l(os.path.join(mnt, "many")))
        ls_warm = timed(lambda: ls_l(os.path.join(mnt, "many")))
        rows.append(("ls -l of %d files, local folder" % args.files, ls_local, None, 1.0))
        rows.append(("ls -l of %d files, mount, cold" % args.files, ls_cold, None, ls_local / ls_cold))
        rows.append(("ls -l of %d files, mount, warm" % args.files, ls_warm, None, ls_local / ls_warm))
    finally:
        if mount is not None:
            subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)
            mount.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("%-42s %10s %12s %16s" % ("what", "seconds", "MiB/s", "rate vs local"))
    for what, secs, rate, ratio in rows:
        print("%-42s %10.3f %12s %16s" % (what, secs, "%.0f" % rate if rate else "-",
                                          "%.2fx" % ratio if ratio else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
