"""Read-through of a gateway in migration mode (``--fallback-url``) to a real 2.x server.

A one-node cluster (N=1) keeps these fast; the 3-node scenario is in test_migration.py.
"""

import email.utils
import hashlib
import os
import subprocess
import time
from urllib.parse import quote

import pytest
import requests

from tests.cluster.conftest import wait_until
from tests.interop import ft2
from tests.migration import dataset
from tests.migration.conftest import run_admin
from tests.migration.test_migration import new_cluster, start_gateway
from tests.support import upstream
from tests.support.procs import script

pytestmark = [pytest.mark.interop]

V = 1500000000
FILES = {"/fb/a.txt": (b"alpha" * 1_000_000, V + 1),  # gzip: 1 MiB decoded pieces from tiny reads
         "/fb/deep/b.bin": (os.urandom(3 * 1024 * 1024 + 5), V + 2),
         "/fb/empty": (b"", V + 3), "/fb/to-delete": (b"delete me", V + 4), "/fb/c.txt": (b"gamma", V + 5),
         "/fb/head-only": (b"only a HEAD", V + 6), "/fb/for-2x.bin": (os.urandom(200000), V + 7),
         "/fb/newer/put": (b"newer on the old server", V + 20), "/fb/newer/delete": (b"kept", V + 21),
         "/fb/copied-then-deleted": (b"gone later", V + 22)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    upstream.require()
    tmp = tmp_path_factory.mktemp("fallback")
    old = upstream.UpstreamServer(str(tmp / "old"), log_path=str(tmp / "old.log")).start()
    cluster = gateway = None
    try:
        s = requests.Session()
        for name, (data, version) in FILES.items():
            dataset.put(s, old.url, name, data, version)
        cluster = new_cluster(tmp / "c", gateways=0, nodes=1).start()
        gateway, url = start_gateway(str(tmp), cluster, "gw", ["--fallback-url", old.url])
        yield old, url
    finally:
        if gateway is not None:
            gateway.stop()
        if cluster is not None:
            cluster.stop()
        old.stop()


def cluster_version(url, name):
    """What the cluster itself holds (the gateway is asked not to fall back)."""
    r = requests.head(url + "/files" + quote(name), headers={"X-No-Fallback": "1"})
    return email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"])) \
        if r.status_code == 200 else None


def test_get_streams_plain_bytes_and_copies(setup):
    old, url = setup
    for name in ("/fb/a.txt", "/fb/deep/b.bin", "/fb/empty"):
        data, version = FILES[name]
        assert cluster_version(url, name) is None
        r = requests.get(url + "/files" + quote(name), headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200 and r.content == data
        assert r.headers["X-Fallback"] == "1" and "Content-Encoding" not in r.headers
        assert r.headers["Content-Length"] == str(len(data))
        assert email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"])) == version
        # copied in the background with the original version; then served by the cluster
        assert wait_until(lambda n=name, v=version: cluster_version(url, n) == v, 10, interval=0.05), name
        r = requests.get(url + "/files" + quote(name))
        assert r.status_code == 200 and r.content == data and "X-Fallback" not in r.headers
        assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_published_2x_client_reads_through_the_gateway(setup, tmp_path):
    """The unchanged 2.x client, pointed at the gateway, gets the old file byte-exact."""
    old, url = setup
    data, _version = FILES["/fb/for-2x.bin"]
    assert cluster_version(url, "/fb/for-2x.bin") is None  # so it really falls back
    out = tmp_path / "b.bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FILETRACKER_URL")}
    p = subprocess.run([ft2.ft2_script("filetracker"), "-r", url, "-c", str(tmp_path / "cache"), "get", "/fb/for-2x.bin", str(out)],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert out.read_bytes() == data


def test_head_and_range_fall_back(setup):
    old, url = setup
    data, version = FILES["/fb/head-only"]
    r = requests.head(url + "/files/fb/head-only")
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data)) and r.headers["X-Fallback"] == "1"
    assert wait_until(lambda: cluster_version(url, "/fb/head-only") == version, 10, interval=0.05)
    # a Range on a fallback answer gets the whole file (200), which HTTP allows
    r = requests.get(url + "/files/fb/c.txt", headers={"Range": "bytes=1-2"})
    assert r.status_code == 200 and r.content == b"gamma"


def test_a_delete_after_a_copy_reaches_the_old_server_too(setup):
    old, url = setup
    name = "/fb/copied-then-deleted"
    data, version = FILES[name]
    assert requests.get(url + "/files" + name).content == data
    assert wait_until(lambda: cluster_version(url, name) == version, 10, interval=0.05)
    r = requests.delete(url + "/files" + name, params={"last_modified": email.utils.formatdate(time.time())})
    assert r.status_code == 200 and r.text == "deleted\n"
    assert requests.get(url + "/files" + name).status_code == 404
    assert requests.get(old.url + "/files" + name).status_code == 404


def test_writes_older_than_the_old_servers_file_change_nothing(setup):
    """A PUT or DELETE at a version older than the old server's file changed the name when no
    read had copied it in yet (and nothing when one had): the newer file is now copied in first,
    so the merge rule judges the write as it would once the name is imported."""
    old, url = setup
    name = "/fb/newer/put"
    data, version = FILES[name]
    r = requests.put(url + "/files" + name, params={"last_modified": email.utils.formatdate(version - 10)},
                     data=b"older")
    assert r.status_code == 200 and r.text == "a newer version is stored\n", r.text
    assert email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"])) == version
    r = requests.get(url + "/files" + name)
    assert r.content == data and "X-Fallback" not in r.headers   # copied in by the PUT
    name = "/fb/newer/delete"
    data, version = FILES[name]
    r = requests.delete(url + "/files" + name, params={"last_modified": email.utils.formatdate(version - 10)})
    assert r.status_code == 200 and r.text == "a newer version is stored; nothing deleted\n", r.text
    assert email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"])) == version
    assert requests.get(url + "/files" + name).content == data
    assert requests.get(old.url + "/files" + name).content == data


def test_delete_of_old_only_name_wins(setup):
    old, url = setup
    name = "/fb/to-delete"
    assert cluster_version(url, name) is None
    r = requests.delete(url + "/files" + name, params={"last_modified": email.utils.formatdate(time.time())})
    assert r.status_code == 200, r.headers.get("X-Exception")
    # the tombstone hides the old copy: no fallback, and neither read nor import resurrects it
    for _ in range(2):
        assert requests.get(url + "/files" + name).status_code == 404
    p = run_admin(["--cluster", url, "import", "--from", old.url, "--prefix", "/fb", "--json"])
    assert p.returncode == 0, p.stderr
    assert "/fb/to-delete" not in p.stdout + p.stderr   # the old server no longer lists it
    assert requests.get(url + "/files" + name).status_code == 404
    # deleted on the old server too: the nodes reclaim the tombstone after --tombstone-ttl, and
    # the old copy was then served, and copied back, again
    assert requests.get(old.url + "/files" + name).status_code == 404
    # a name neither side holds
    r = requests.delete(url + "/files/fb/nowhere", params={"last_modified": email.utils.formatdate(time.time())})
    assert r.status_code == 404
    assert requests.get(url + "/files/fb/nowhere").status_code == 404


def test_writes_go_to_the_cluster_only(setup):
    old, url = setup
    r = requests.put(url + "/files/fb/c.txt", params={"last_modified": email.utils.formatdate(V + 1000)},
                     data=b"newer in the cluster")
    assert r.status_code == 200
    assert requests.get(url + "/files/fb/c.txt").content == b"newer in the cluster"
    assert requests.get(old.url + "/files/fb/c.txt").content == b"gamma"


def test_listing_includes_old_names_but_not_deleted_ones(setup):
    old, url = setup
    r = requests.put(url + "/files/fb/new-in-cluster", params={"last_modified": email.utils.formatdate(V + 9)},
                     data=b"new")
    assert r.status_code == 200
    deleted = ("/fb/to-delete", "/fb/copied-then-deleted")
    want = sorted(n[len("/fb/"):] for n in FILES if n not in deleted) + ["new-in-cluster"]
    r = requests.get(url + "/list/fb")
    assert r.status_code == 200 and r.text.splitlines() == sorted(want)
    r = requests.get(url + "/list/fb/deep/")
    assert r.text == "b.bin\n"
    r = requests.get(url + "/list/", params={"last_modified": email.utils.formatdate(V + 2)})
    assert r.text.splitlines() == ["fb/a.txt", "fb/deep/b.bin"]
    assert requests.get(url + "/list/nothing-here").text == ""
    # X-No-Fallback: the cluster's names only, as for GET and HEAD (and as the server answers);
    # the gateway listed the old server's names too, and without the details asked for
    dataset.put(requests.Session(), old.url, "/fb/old-only", b"never read here", V + 10)
    assert "old-only" in requests.get(url + "/list/fb").text.splitlines()
    r = requests.get(url + "/list/fb", headers={"X-No-Fallback": "1"})
    assert r.status_code == 200 and "new-in-cluster" in r.text.splitlines(), r.text
    assert "old-only" not in r.text.splitlines(), r.text
    r = requests.get(url + "/list/fb", params={"details": "1"}, headers={"X-No-Fallback": "1"})
    assert r.headers.get("X-List-Format") == "details", r.headers
    assert [line.split("\t")[0] for line in r.text.splitlines() if line.startswith("new-in-cluster")] \
        == ["new-in-cluster"], r.text


def test_old_server_down_is_502_not_500(setup, tmp_path):
    old, url = setup
    from tests.support.procs import free_port

    cluster_dir = tmp_path
    c = new_cluster(cluster_dir / "c", gateways=0, nodes=1).start()
    gw = None
    try:
        gw, gw_url = start_gateway(str(tmp_path), c, "gw-down", ["--fallback-url",
                                                                 "http://127.0.0.1:%d" % free_port()])
        r = requests.get(gw_url + "/files/fb/a.txt")
        assert r.status_code == 502 and "old server" in r.headers["X-Exception"]
        assert "Traceback" not in r.text
    finally:
        if gw is not None:
            gw.stop()
        c.stop()


def test_gateway_flag_errors():
    for args in (["--fallback-no-copy"], ["--fallback-url", "ftp://x"]):
        p = subprocess.run([script("filetracker-gateway"), "--port", "1", "--nodes", "http://127.0.0.1:1"] + args,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "fallback" in p.stderr
