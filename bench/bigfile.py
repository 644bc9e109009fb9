"""Large-file throughput: 256 MiB PUT and GET with curl, and a raw loopback copy baseline.

curl streams the file (``-T``) and discards the download, so the client side
costs next to nothing.  ``Expect:`` is blanked so curl does not wait for a
``100 Continue`` some servers never send.

The baseline is ``socat`` copying the same file over a loopback TCP
connection into a file in the same folder (what a store must at least do:
read, send, receive, write), and, for reference, into /dev/null.
MB/s here are 10**6 bytes per second of logical (uncompressed) content.
"""

import os
import signal
import subprocess
import time

from tests.support.procs import free_port

CHUNK = 1 << 20
# socat buffer: 256 KiB, a sensible copy (its 8 KiB default is several times slower here).
BUF = "262144"


def make_file(path, size):
    """Random (incompressible) content, written in 1 MiB chunks."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(os.urandom(n))
            left -= n
    return path


def _curl(argv, timeout):
    out = subprocess.run(["curl", "-sS", "--max-time", str(timeout)] + argv,
                         capture_output=True, text=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)
    fields = out.stdout.strip().split()
    if out.returncode != 0 or len(fields) < 3:
        raise RuntimeError("curl failed (%s): %s" % (out.returncode, (out.stderr or out.stdout)[-300:]))
    return int(fields[0]), float(fields[1]), int(float(fields[2]))


def put(base_url, name, path, date_q, timeout=300):
    """PUT ``path`` as ``name``; {"mb_s", "seconds", "status"}."""
    size = os.path.getsize(path)
    status, seconds, sent = _curl(
        ["-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_upload}", "-H", "Expect:",
         "-H", "Content-Type: application/octet-stream", "-T", path,
         "%s/files%s?last_modified=%s" % (base_url, name, date_q)], timeout)
    if status != 200 or sent != size:
        raise RuntimeError("PUT %s: status %s, sent %s of %s bytes" % (name, status, sent, size))
    return {"mb_s": size / seconds / 1e6, "seconds": seconds, "status": status}


def get(base_url, name, size, timeout=300):
    """GET ``name`` into /dev/null; MB/s of the logical size (the 2.x server sends gzip)."""
    status, seconds, got = _curl(
        ["-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}",
         "%s/files%s" % (base_url, name)], timeout)
    if status != 200 or got == 0:
        raise RuntimeError("GET %s: status %s, %s bytes" % (name, status, got))
    return {"mb_s": size / seconds / 1e6, "seconds": seconds, "status": status, "wire_bytes": got}


def _listening(port):
    """True when something listens on 127.0.0.1:port (checked in /proc, without connecting:
    socat accepts exactly one connection, a probe would take it)."""
    want = ":%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1].endswith(want) and parts[3] == "0A":
                return True
    return False


def raw_copy(path, dest, timeout=120):
    """Copy ``path`` over loopback TCP with socat into ``dest`` (a new file, left in place: the
    caller removes it when nothing is measured any more); {"mb_s", "seconds"}."""
    size = os.path.getsize(path)
    port = free_port()
    sink = "OPEN:%s,creat,trunc" % dest if dest != "/dev/null" else "OPEN:/dev/null"
    recv = subprocess.Popen(["socat", "-u", "-b", BUF, "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr" % port, sink],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if time.monotonic() > deadline or recv.poll() is not None:
                raise RuntimeError("socat receiver did not start")
            time.sleep(0.01)
        t0 = time.monotonic()
        subprocess.run(["socat", "-u", "-b", BUF, "FILE:%s" % path, "TCP:127.0.0.1:%d" % port], check=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
        recv.wait(timeout=timeout)
        seconds = time.monotonic() - t0
    finally:
        if recv.poll() is None:
            os.killpg(recv.pid, signal.SIGKILL)
            recv.wait()
    if dest != "/dev/null":
        got = os.path.getsize(dest)
        if got != size:
            raise RuntimeError("raw copy wrote %s of %s bytes" % (got, size))
    return {"mb_s": size / seconds / 1e6, "seconds": seconds}
