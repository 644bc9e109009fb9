"""Helpers of the admin and rebalance tests (no tests here).

* :func:`admin` runs ``filetracker-admin`` as a real process against a
  :class:`~tests.cluster.conftest.NodeCluster`;
* :func:`write_files` writes many small files through a gateway from a thread pool;
* :class:`LoadLoop` reads and writes through a gateway while something else
  happens, and records every failed read and every acknowledged write;
* :func:`placement` asks every node what it holds and compares it with a ring.
"""

import email.utils
import hashlib
import os
import random
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support.procs import Service, free_port, script

BASE_VERSION = 1795550400


def http_date(version):
    return email.utils.formatdate(version)


def admin(cluster, *args, timeout=180, url=None):
    """Run ``filetracker-admin --cluster URL --cluster-secret-file F ARGS``; a CompletedProcess."""
    argv = [script("filetracker-admin"), "--cluster", url or cluster.urls[0]]
    if cluster.secret_file:
        argv += ["--cluster-secret-file", cluster.secret_file]
    proc = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    print("$ filetracker-admin %s -> %d\n%s%s" % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
    return proc


def admin_background(cluster, *args, log_name="admin.log"):
    """Start ``filetracker-admin ARGS`` as a :class:`Service` (killable by process group)."""
    argv = [script("filetracker-admin"), "--cluster", cluster.urls[0]]
    if cluster.secret_file:
        argv += ["--cluster-secret-file", cluster.secret_file]
    return Service(argv + list(args), os.path.join(cluster.tmp, log_name)).start()


def start_gateway(cluster, node_urls, name="gw"):
    """A gateway over ``node_urls`` (its seeds); returns ``(service, url)``."""
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    argv = [script("filetracker-gateway"), "--port", str(port), "--nodes", ",".join(node_urls),
            "--log-level", "WARNING", "--timeout", "5"]
    if cluster.secret_file:
        argv += ["--cluster-secret-file", cluster.secret_file]
    svc = Service(argv, os.path.join(cluster.tmp, name + ".log"), ready_url=url + "/version/").start()
    return svc, url


def content_of(name, size=300):
    """Deterministic content of a test file (so a reader can check it without shared state)."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def put(gw, name, data, version=BASE_VERSION, session=None):
    s = session or requests
    return s.put(gw + "/files" + name, params={"last_modified": http_date(version)}, data=data, timeout=30)


def write_files(gw, names, workers=16):
    """PUT every name (content :func:`content_of`) through the gateway; asserts each is acked."""
    local = threading.local()

    def one(name):
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        r = put(gw, name, content_of(name), session=s)
        assert r.status_code == 200, (name, r.status_code, r.headers.get("X-Exception"))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, names))


class LoadLoop:
    """Readers of ``read_names`` and writers of new names through ``gw`` until :meth:`stop`."""

    def __init__(self, gw, read_names, readers=2, writers=2, prefix="/load"):
        self.gw = gw
        self.read_names = list(read_names)
        self.prefix = prefix
        self.acked = []            # names whose PUT answered 200
        self.write_failures = []   # (name, status or error) - allowed, but counted
        self.read_failures = []    # (name, what) - must stay empty
        self.reads = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(readers)]
        self._threads += [threading.Thread(target=self._write, args=(i,), daemon=True) for i in range(writers)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def _read(self, i):
        rnd = random.Random(i)
        s = requests.Session()
        while not self._stop.is_set():
            with self._lock:
                pool = self.read_names if rnd.random() < 0.7 or not self.acked else self.acked
                name = rnd.choice(pool)
            try:
                r = s.get(self.gw + "/files" + name, timeout=30)
                ok = r.status_code == 200 and r.content == content_of(name)
                what = "status %d %s" % (r.status_code, r.headers.get("X-Exception", ""))
            except requests.RequestException as e:
                ok, what = False, str(e)
            with self._lock:
                self.reads += 1
                if not ok:
                    self.read_failures.append((name, what))

    def _write(self, i):
        s = requests.Session()
        n = 0
        while not self._stop.is_set():
            name = "%s/w%d-%d" % (self.prefix, i, n)
            n += 1
            try:
                r = put(self.gw, name, content_of(name), session=s)
                status = r.status_code
            except requests.RequestException as e:
                status = str(e)
            with self._lock:
                if status == 200:
                    self.acked.append(name)
                else:
                    self.write_failures.append((name, status))
            time.sleep(0.005)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)
        return self

    def summary(self):
        return "load: %d reads (%d failed), %d writes acked, %d writes failed" % (
            self.reads, len(self.read_failures), len(self.acked), len(self.write_failures))


def holdings(cluster, indexes):
    """``{name: {node_url: Record}}`` of every record the nodes ``indexes`` hold."""
    out = {}
    for i in indexes:
        for name, rec in cluster.listing(i).items():
            out.setdefault(name, {})[cluster.urls[i]] = rec
    return out


def placement_errors(ring, held, names):
    """Names not held by exactly their owners under ``ring`` (with identical records)."""
    errors = []
    for name in names:
        owners = {n.url for n in ring.owners(name)}
        where = held.get(name, {})
        if set(where) != owners:
            errors.append((name, "held by %s, owners %s" % (sorted(where), sorted(owners))))
        elif len(set(where.values())) != 1:
            errors.append((name, "replicas differ: %s" % where))
    return errors


def node_ring(cluster, i):
    return cluster.client.get_ring(cluster.urls[i])
