"""FUSE benchmark (issue 9, item 6; not a test): the mount next to the local disk.

Starts our ``filetracker-server`` and a ``filetracker-fuse`` mount on
127.0.0.1 (own sessions, stopped by process group, always unmounted), then
prints side by side, in one run:

- reading a cached 256 MiB file (written through the mount, so the versioned
  file is in the Client's cache): the cache file itself from the local disk vs
  the same file through the mount, in three states:

  * **cold**: neither the cache file nor the mount's file in the page cache
    (evicted per file with ``posix_fadvise(POSIX_FADV_DONTNEED)``, which drops
    a file's clean pages without touching the rest of this shared machine; the
    cache file's eviction is checked with ``preadv(RWF_NOWAIT)`` probes).  Local = a read
    from the disk; mount = the daemon reads the disk.
  * **warm, first open**: the cache file is in the page cache but the mount's
    file is not (its pages evicted the same way): every byte goes through the
    daemon.  Compared with a local read from the page cache.
  * **warm, second open**: the same version opened again; the kernel keeps the
    mount's page cache (``keep_cache``), so the daemon is not involved.

- ``ls -l`` of a folder of 2,000 files: a local folder vs the mount, cold
  (attributes expired: one ``/list/<folder>?details=1`` request gives every
  name, size and version; a burst of HEADs against a server without it) and warm
  (within the attribute timeout).

The machine may be shared, so every case is measured ``--rounds`` times,
interleaved (local, then mount, in each round); the table shows the best and
the median wall time, the rate vs the local read of the same round (median of
the per-round ratios, and best vs best), and the CPU seconds spent (reader +
mount daemon), which do not depend on the load.  ``uptime`` is printed before
and after.

    python bench/fuse_bench.py [--size-mib 256] [--files 2000] [--rounds 5] [--keep DIR]
"""

import argparse
import concurrent.futures
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.procs import Service, free_port, script  # noqa: E402

MIB = 1 << 20
TARGET = 0.5
TICK = os.sysconf("SC_CLK_TCK")


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def mount_info(path):
    """Mount options of ``path`` and the read-ahead of its device (KiB), for the record."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == path:
                opts = parts[5] + " " + parts[-1]
                major, minor = parts[2].split(":")
                try:
                    with open("/sys/class/bdi/%s:%s/read_ahead_kb" % (major, minor)) as ra:
                        return opts, ra.read().strip()
                except OSError:
                    return opts, "?"
    return "?", "?"


def process_cpu(pid):
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def read_all(path, bufsize=1 << 20):
    with open(path, "rb", buffering=0) as f:
        while f.read(bufsize):
            pass


def evict(path):
    """Drop one file's clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path, probes=64):
    """Fraction of ``probes`` evenly spread pages of ``path`` that are in the page cache."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    hits = 0
    buf = bytearray(1)
    try:
        for i in range(probes):
            try:
                os.preadv(fd, [buf], size * i // probes, os.RWF_NOWAIT)
                hits += 1
            except BlockingIOError:
                pass
    finally:
        os.close(fd)
    return hits / probes


class Meter:
    """Wall time and CPU (this process + the mount daemon) of one call."""

    def __init__(self, daemon_pid):
        self.daemon_pid = daemon_pid

    @staticmethod
    def _own_cpu():
        t = os.times()  # this process and its waited-for children (ls)
        return t.user + t.system + t.children_user + t.children_system

    def __call__(self, fn):
        c0, d0 = self._own_cpu(), process_cpu(self.daemon_pid)
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        return wall, self._own_cpu() - c0 + process_cpu(self.daemon_pid) - d0


def ls_l(path):
    subprocess.run(["ls", "-l", path], stdout=subprocess.DEVNULL, check=True)


def summarize(name, samples, local=None, mib=None):
    """A table row: ``samples`` are (wall, cpu) per round; ``local`` the same for the baseline."""
    walls = [w for w, _ in samples]
    best, median = min(walls), statistics.median(walls)
    cpu = statistics.median(c for _, c in samples)
    ratio = ratio_best = None
    if local is not None:
        ratio = statistics.median(lw / w for (lw, _), (w, _) in zip(local, samples, strict=True))
        ratio_best = min(w for w, _ in local) / best
    return (name, best, median, mib / best if mib else None, cpu, ratio, ratio_best)


def print_table(rows):
    head = ("what", "best s", "median s", "MiB/s", "cpu s", "vs local", "best/best")
    print("%-44s %8s %9s %7s %7s %9s %9s" % head)
    for name, best, median, rate, cpu, ratio, ratio_best in rows:
        print("%-44s %8.3f %9.3f %7s %7.3f %9s %9s" % (
            name, best, median, "%.0f" % rate if rate else "-", cpu,
            "%.2fx" % ratio if ratio is not None else "-", "%.2fx" % ratio_best if ratio_best is not None else "-"))


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-direct-io", action="store_true", help="skip the second mount (--direct-io-above 0)")
    p.add_argument("--mount-arg", action="append", default=[], help="extra filetracker-fuse argument (repeatable)")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = p.parse_args(argv)

    print("before: %s (%d CPUs)" % (uptime(), os.cpu_count()))
    work = args.keep or tempfile.mkdtemp(prefix="fuse-bench-", dir=os.environ.get("FUSE_BENCH_DIR"))
    os.makedirs(work, exist_ok=True)
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    cache = os.path.join(work, "cache")
    server = Service([script("filetracker-server"), "--dir", os.path.join(work, "data"), "--port", str(port),
                      "--log-level", "WARNING"], os.path.join(work, "server.log"), ready_url=url + "/version/")
    mounts = {}  # label -> (mountpoint, Service)
    rows, notes = [], []
    try:
        server.start()

        def start_mount(label, name, extra):
            mnt = os.path.join(work, name)
            os.makedirs(mnt, exist_ok=True)
            svc = Service([script("filetracker-fuse"), mnt, "--url", url, "--cache-dir", cache, "--foreground",
                           "--log", os.path.join(work, name + ".log")] + extra,
                          os.path.join(work, name + ".out")).start()
            mounts[label] = (mnt, svc)
            deadline = time.monotonic() + 20
            while not is_mounted(mnt):
                if time.monotonic() > deadline or not svc.alive():
                    raise RuntimeError("mount failed: " + svc.log_tail())
                time.sleep(0.05)
            return mnt, svc

        mnt, mount = start_mount("mount", "mnt", args.mount_arg)
        labels = ["mount"]
        if not args.no_direct_io:
            # A second mount of the same cache, reading with direct I/O (the
            # --direct-io-above option): both measured in the same rounds.
            start_mount("mount, direct I/O", "mnt-dio", args.mount_arg + ["--direct-io-above", "0"])
            labels.append("mount, direct I/O")
        time.sleep(0.5)  # the daemons tune the mounts' read-ahead right after mounting
        for label in labels:
            opts, ra = mount_info(mounts[label][0])
            notes.append("%s: %s; read_ahead_kb=%s" % (label, opts, ra))

        # -- a cached 256 MiB file ----------------------------------------------------
        src = os.path.join(work, "big.src")
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MIB))
        write = Meter(mount.pid)(lambda: shutil.copyfile(src, os.path.join(mnt, "big.bin")))
        os.unlink(src)
        cached = os.path.join(cache, "files", "big.bin")
        deadline = time.monotonic() + 30
        while not os.path.exists(cached):  # release (asynchronous) hands the staged file to the cache
            assert time.monotonic() < deadline, "the file did not reach the cache"
            time.sleep(0.1)
        mib = os.path.getsize(cached) / MIB
        through = {label: os.path.join(mounts[label][0], "big.bin") for label in labels}
        meters = {label: Meter(mounts[label][1].pid) for label in labels}
        for path in through.values():
            read_all(path)  # each mount has opened this version: later opens keep the kernel's cache
        local = Meter(mount.pid)
        local_cold, local_warm = [], []
        cold = {label: [] for label in labels}
        first = {label: [] for label in labels}
        again = {label: [] for label in labels}
        cold_checks = []
        for _ in range(args.rounds):
            evict(cached)
            cold_checks.append(cached_fraction(cached))
            local_cold.append(local(lambda: read_all(cached)))
            for label in labels:
                evict(cached)
                evict(through[label])
                cold_checks.append(cached_fraction(cached))
                cold[label].append(meters[label](functools.partial(read_all, through[label])))
            read_all(cached)
            local_warm.append(local(lambda: read_all(cached)))
            for label in labels:
                evict(through[label])
                first[label].append(meters[label](functools.partial(read_all, through[label])))
                again[label].append(meters[label](functools.partial(read_all, through[label])))
        notes.append("cold reads started with at most %.0f%% of the probed pages of the cache file cached"
                     % (100 * max(cold_checks)))
        rows.append(summarize("read %d MiB, local disk, cold" % mib, local_cold, local_cold, mib))
        for label in labels:
            rows.append(summarize("read %d MiB, %s, cold" % (mib, label), cold[label], local_cold, mib))
        rows.append(summarize("read %d MiB, local, page cache" % mib, local_warm, local_warm, mib))
        for label in labels:
            rows.append(summarize("read %d MiB, %s, warm, 1st open" % (mib, label), first[label], local_warm, mib))
            rows.append(summarize("read %d MiB, %s, warm, 2nd open" % (mib, label), again[label], local_warm, mib))
        rows.append(summarize("write %d MiB into the mount (cp + upload)" % mib, [write], None, mib))

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
        folder = os.path.join(mnt, "many")
        meter = Meter(mount.pid)
        ls_local, ls_cold, ls_warm = [], [], []
        for _ in range(min(args.rounds, 3)):
            ls_local.append(meter(lambda: ls_l(local_dir)))
            time.sleep(1.1)  # past the attribute timeout (1 s): the mount asks the server again
            ls_cold.append(meter(lambda: ls_l(folder)))
            ls_warm.append(meter(lambda: ls_l(folder)))
        rows.append(summarize("ls -l of %d files, local folder" % args.files, ls_local, ls_local))
        rows.append(summarize("ls -l of %d files, mount, cold" % args.files, ls_cold, ls_local))
        rows.append(summarize("ls -l of %d files, mount, warm" % args.files, ls_warm, ls_local))
    finally:
        for path, svc in mounts.values():
            subprocess.run(["fusermount3", "-u", path], capture_output=True)
            if is_mounted(path):
                subprocess.run(["fusermount3", "-uz", path], capture_output=True)
            svc.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print_table(rows)
    for note in notes:
        print("note: " + note)
    for label in labels:
        verdict = []
        for case in ("cold", "warm, 1st open", "warm, 2nd open"):
            row = next(r for r in rows if r[0].endswith(", %s, %s" % (label, case)))
            verdict.append("%s %.2fx %s" % (case, row[5], "ok" if row[5] >= TARGET else "BELOW"))
        print("acceptance 6, %s (read rate >= %.1fx local, median of rounds): %s"
              % (label, TARGET, "; ".join(verdict)))
    print("after: %s" % uptime())
    return 0


if __name__ == "__main__":
    sys.exit(main())
