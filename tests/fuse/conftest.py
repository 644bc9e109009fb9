"""Real mounts for the FUSE tests: a real server (or gateway over 3 nodes) and
``filetracker-fuse`` processes we start and always unmount and stop.

Every test here is marked ``fuse`` and skipped, with the reason, when
``/dev/fuse``, ``fusermount3`` or the mfusepy binding is missing.
"""

import os
import shutil
import subprocess
import time

import pytest

from tests.support.procs import Service, free_port, script

HERE = os.path.dirname(os.path.abspath(__file__))


def fuse_unavailable():
    """Why FUSE tests cannot run here (a string), or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:
        return "the mfusepy binding cannot load libfuse: %s" % e
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "no_fuse_needed: a test under tests/fuse that needs no mount")


def pytest_collection_modifyitems(config, items):
    reason = fuse_unavailable()
    for item in items:
        if str(item.fspath).startswith(HERE + os.sep) and "no_fuse_needed" not in item.keywords:
            item.add_marker(pytest.mark.fuse)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def is_mounted(path):
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


def unmount(path, timeout=10.0):
    """``fusermount3 -u`` (retried while busy), then a lazy ``-uz`` as the last resort."""
    deadline = time.monotonic() + timeout
    while is_mounted(path) and time.monotonic() < deadline:
        subprocess.run(["fusermount3", "-u", path], capture_output=True)
        if is_mounted(path):
            time.sleep(0.2)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", path], capture_output=True)


class Backend:
    """A store to mount: ``url``; ``stop()``/``start()`` for fault tests."""

    def __init__(self, kind, url, services, restart=None, cluster=None):
        self.kind = kind
        self.url = url
        self.services = services
        self._restart = restart
        self.cluster = cluster

    def stop(self):
        for s in self.services:
            s.stop()

    def start(self):
        self.services = self._restart()


def start_server(tmp_path, port=None):
    port = port or free_port()
    url = "http://127.0.0.1:%d" % port
    data = os.path.join(str(tmp_path), "server-data")
    os.makedirs(data, exist_ok=True)

    def launch():
        return [Service([script("filetracker-server"), "--dir", data, "--port", str(port), "--log-level", "WARNING"],
                        os.path.join(str(tmp_path), "server.log"), ready_url=url + "/version/").start()]

    return Backend("server", url, launch(), restart=launch)


def start_gateway_cluster(tmp_path):
    from tests.cluster.test_e2e_support import TestCluster

    cluster = TestCluster(os.path.join(str(tmp_path), "cluster"), nodes=3, replicas=3).start()

    def relaunch():
        cluster.start()
        return cluster.gateways + cluster.nodes

    return Backend("gateway", cluster.gw, cluster.gateways + cluster.nodes, restart=relaunch, cluster=cluster)


def gateway_available():
    return shutil.which(script("filetracker-gateway")) is not None and shutil.which(
        script("filetracker-node")) is not None


def _backend(request, tmp_path):
    if request.param == "server":
        b = start_server(tmp_path)
    else:
        if not gateway_available():
            pytest.skip("filetracker-gateway / filetracker-node are not installed")
        os.makedirs(os.path.join(str(tmp_path), "cluster"), exist_ok=True)
        b = start_gateway_cluster(tmp_path)
    return b


@pytest.fixture(params=["server", "gateway"])
def backend(request, tmp_path):
    """Our ``filetracker-server``, then the gateway over 3 nodes."""
    b = _backend(request, tmp_path)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module", params=["server", "gateway"])
def module_backend(request, tmp_path_factory):
    """Like ``backend``, shared by the tests of one module."""
    b = _backend(request, tmp_path_factory.mktemp("backend"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def server(tmp_path):
    """Only our ``filetracker-server`` (for tests whose subject is the mount itself)."""
    b = start_server(tmp_path)
    try:
        yield b
    finally:
        b.stop()


class Mount:
    """One ``filetracker-fuse --foreground`` process and its mountpoint."""

    def __init__(self, base, url, name="mnt", cache_dir=None, args=()):
        self.path = os.path.join(base, name)
        self.cache_dir = cache_dir or os.path.join(base, name + "-cache")
        self.log = os.path.join(base, name + ".log")
        os.makedirs(self.path, exist_ok=True)
        os.makedirs(self.cache_dir, exist_ok=True)
        self.argv = [script("filetracker-fuse"), self.path, "--url", url, "--cache-dir", self.cache_dir,
                     "--foreground", "--log", self.log] + list(args)
        self.service = None

    def start(self, timeout=20.0):
        self.service = Service(self.argv, self.log + ".out")
        self.service.start()
        deadline = time.monotonic() + timeout
        while not is_mounted(self.path):
            if not self.service.alive():
                raise RuntimeError("filetracker-fuse exited:\n%s\n%s" % (self.service.log_tail(), self.log_tail()))
            if time.monotonic() > deadline:
                raise RuntimeError("not mounted within %ss:\n%s" % (timeout, self.log_tail()))
            time.sleep(0.05)
        return self

    def log_tail(self, n=4000):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def p(self, *parts):
        return os.path.join(self.path, *[x.lstrip("/") for x in parts])

    def staged_writes(self):
        """The write buffers the mount holds: one ``fuse.*`` file in the cache's tmp/ per file open
        for writing, removed by the last release after its upload (if any) is over."""
        try:
            return [n for n in os.listdir(os.path.join(self.cache_dir, "tmp")) if n.startswith("fuse.")]
        except FileNotFoundError:
            return []

    def wait_writers_released(self, timeout=10.0):
        """Wait until every file opened for writing has been released (release runs after
        ``close`` returned): from then on, what was not uploaded never will be."""
        deadline = time.monotonic() + timeout
        while self.staged_writes():
            assert time.monotonic() < deadline, "still open for writing: %s" % self.staged_writes()
            time.sleep(0.02)

    def peak_rss_kib(self):
        return self.service.peak_rss_kib() if self.service else None

    def stop(self):
        unmount(self.path)
        if self.service is not None:
            try:
                self.service.proc.wait(timeout=10)
            except Exception:
                pass
            self.service.stop()


@pytest.fixture
def mount_factory(tmp_path):
    """``mount_factory(url, name=..., args=...)`` -> a started :class:`Mount`; all stopped at the end."""
    mounts = []

    def make(url, name="mnt", cache_dir=None, args=()):
        m = Mount(str(tmp_path), url, name=name, cache_dir=cache_dir, args=args)
        mounts.append(m)
        return m.start()

    try:
        yield make
    finally:
        for m in mounts:
            m.stop()
