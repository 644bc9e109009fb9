"""Issue 9 acceptance 5: the store goes away while the mount is in use.

Reads of uncached files fail with EIO within the timeout, cached files still
read; after a restart the same mount works again.  Unmounting leaves no
process and no mount behind.
"""

import os
import subprocess
import time

from filetracker.client import Client
from tests.fuse.conftest import is_mounted

TIMEOUT = 2.0


def cat(path, timeout=30):
    t = time.monotonic()
    proc = subprocess.run(["cat", path], capture_output=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"), time.monotonic() - t


def put(client, tmp_path, name, data):
    local = tmp_path / "put.tmp"
    local.write_bytes(data)
    client.put_file(name, str(local), to_local_store=False)


def stop_store(backend):
    """Make the store unanswerable: the server, or every node behind the gateway."""
    if backend.kind == "server":
        backend.stop()
    else:
        for node in backend.cluster.nodes:
            node.stop()


def restart_store(backend):
    if backend.kind == "server":
        backend.start()
    else:
        for i in range(len(backend.cluster.nodes)):
            backend.cluster.restart_node(i)
        backend.services = backend.cluster.gateways + backend.cluster.nodes


def test_store_down_and_back(backend, mount_factory, tmp_path):
    client = Client(cache_dir=str(tmp_path / "client-cache"), remote_url=backend.url)
    put(client, tmp_path, "/down/cached.txt", b"cached content\n")
    put(client, tmp_path, "/down/uncached.txt", b"uncached content\n")
    m = mount_factory(backend.url, args=["--timeout", str(TIMEOUT), "--attr-timeout", "0.5"])
    assert cat(m.p("/down/cached.txt"))[:2] == (0, b"cached content\n")

    stop_store(backend)
    time.sleep(0.6)  # attributes expired: the mount must ask again
    rc, out, err, took = cat(m.p("/down/uncached.txt"))
    assert rc != 0 and "Input/output error" in err, (rc, err)
    assert took < 2 * TIMEOUT + 1, took
    rc, out, err, took = cat(m.p("/down/cached.txt"))
    assert (rc, out) == (0, b"cached content\n"), err

    restart_store(backend)
    deadline = time.monotonic() + 15
    while True:
        rc, out, err, _ = cat(m.p("/down/uncached.txt"))
        if rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert (rc, out) == (0, b"uncached content\n"), err

    pid = m.service.pid
    m.stop()
    assert not is_mounted(m.path)
    assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z"


def test_stopped_server_times_out(server, mount_factory, tmp_path):
    """A server that accepts connections but never answers (SIGSTOP): EIO within the timeout."""
    client = Client(cache_dir=str(tmp_path / "client-cache"), remote_url=server.url)
    put(client, tmp_path, "/slow/x.txt", b"x\n")
    m = mount_factory(server.url, args=["--timeout", str(TIMEOUT), "--attr-timeout", "0.2"])
    server.services[0].pause()
    try:
        time.sleep(0.3)
        rc, out, err, took = cat(m.p("/slow/x.txt"), timeout=60)
        assert rc != 0 and "Input/output error" in err, (rc, err)
        assert took < 3 * TIMEOUT + 1, took
    finally:
        server.services[0].resume()
    rc, out, err, _ = cat(m.p("/slow/x.txt"))
    assert (rc, out) == (0, b"x\n"), err
