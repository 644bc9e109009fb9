"""``filetracker-server --fallback-url`` against a real 2.x server: read-through, streamed (no 307).

A GET/HEAD for a name our server has no record of is answered from the old
server, streamed, with its version; unless ``--fallback-no-copy`` the file is
then copied here in the background with that version; writes and deletes stay
here; a delete here is never undone by the old copy (tombstone).
"""

import email.utils
import hashlib
import os
import subprocess
import sys
import time
from urllib.parse import quote

import pytest
import requests

from tests.cluster.conftest import wait_until
from tests.interop import ft2
from tests.migration import dataset
from tests.support import upstream
from tests.support.procs import Service, free_port, script

pytestmark = [pytest.mark.interop]

V = 1500000000
FILES = {"/sf/a.txt": (b"alpha" * 1000, V + 1), "/sf/deep/b.bin": (os.urandom(3 * 1024 * 1024 + 5), V + 2),
         "/sf/empty": (b"", V + 3), "/sf/to-delete": (b"delete me", V + 4), "/sf/c.txt": (b"gamma", V + 5),
         "/sf/head-only": (b"only a HEAD", V + 6), "/sf/copied-then-deleted": (b"gone later", V + 7),
         "/sf/no-copy.txt": (b"served, never copied", V + 8), "/sf/for-2x.bin": (os.urandom(200000), V + 9),
         "/sf/newer/put": (b"newer on the old server", V + 20), "/sf/newer/delete": (b"kept", V + 21)}


def our_server(tmp, name, *extra):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    svc = Service([script("filetracker-server"), "-p", str(port), "-l", "127.0.0.1", "-d", os.path.join(tmp, name),
                   "-D", "--log-level", "INFO"] + list(extra), os.path.join(tmp, name + ".log"),
                  ready_url=url + "/version/").start()
    return svc, url


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    upstream.require()
    tmp = str(tmp_path_factory.mktemp("server-fallback"))
    old = upstream.UpstreamServer(os.path.join(tmp, "old"), log_path=os.path.join(tmp, "old.log")).start()
    started = []
    try:
        s = requests.Session()
        for name, (data, version) in FILES.items():
            dataset.put(s, old.url, name, data, version)
        ours, url = our_server(tmp, "ours", "--fallback-url", old.url)
        started.append(ours)
        nocopy, nocopy_url = our_server(tmp, "nocopy", "--fallback-url", old.url, "--fallback-no-copy")
        started.append(nocopy)
        yield old, url, nocopy_url
    finally:
        for svc in started:
            svc.stop()
        old.stop()


def version_of(r):
    return email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"]))


def local_version(url, name):
    """What our server itself holds (asked not to fall back); None without a live record."""
    r = requests.head(url + "/files" + quote(name), headers={"X-No-Fallback": "1"}, timeout=10)
    return version_of(r) if r.status_code == 200 else None


def test_get_streams_with_the_old_version_then_copies(setup):
    old, url, _ = setup
    for name in ("/sf/a.txt", "/sf/deep/b.bin", "/sf/empty"):
        data, version = FILES[name]
        assert local_version(url, name) is None
        r = requests.get(url + "/files" + quote(name), headers={"Accept-Encoding": "identity"},
                         allow_redirects=False, timeout=30)
        assert r.status_code == 200 and r.content == data  # streamed through, not 307
        assert r.headers["X-Fallback"] == "1" and "Content-Encoding" not in r.headers
        assert r.headers["Content-Length"] == str(len(data))
        assert version_of(r) == version
        # copied here in the background, with the original version; then served locally
        assert wait_until(lambda n=name, v=version: local_version(url, n) == v, 10, interval=0.05), name
        r = requests.get(url + "/files" + quote(name), timeout=30)
        assert r.status_code == 200 and "X-Fallback" not in r.headers and version_of(r) == version
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()


def test_head_falls_back_and_copies(setup):
    old, url, _ = setup
    data, version = FILES["/sf/head-only"]
    r = requests.head(url + "/files/sf/head-only", allow_redirects=False, timeout=10)
    assert r.status_code == 200 and r.headers["X-Fallback"] == "1"
    assert r.headers["Content-Length"] == str(len(data)) and version_of(r) == version
    assert wait_until(lambda: local_version(url, "/sf/head-only") == version, 10, interval=0.05)


def test_no_copy_serves_but_never_copies(setup):
    old, _, nocopy_url = setup
    data, version = FILES["/sf/no-copy.txt"]
    for _ in range(2):
        r = requests.get(nocopy_url + "/files/sf/no-copy.txt", allow_redirects=False, timeout=10)
        assert r.status_code == 200 and r.content == data and version_of(r) == version
    time.sleep(0.5)
    assert local_version(nocopy_url, "/sf/no-copy.txt") is None
    assert requests.get(nocopy_url + "/files/sf/no-copy.txt", headers={"X-No-Fallback": "1"},
                        timeout=10).status_code == 404


def test_writes_stay_local(setup):
    old, url, _ = setup
    r = requests.put(url + "/files/sf/c.txt", params={"last_modified": email.utils.formatdate(V + 1000)},
                     data=b"newer here", timeout=10)
    assert r.status_code == 200
    assert requests.get(url + "/files/sf/c.txt", timeout=10).content == b"newer here"
    assert requests.get(old.url + "/files/sf/c.txt", timeout=10).content == b"gamma"
    r = requests.put(url + "/files/sf/new-here", params={"last_modified": email.utils.formatdate(V + 10)},
                     data=b"new", timeout=10)
    assert r.status_code == 200
    assert requests.get(old.url + "/files/sf/new-here", timeout=10).status_code == 404


def test_delete_of_old_only_name_writes_a_tombstone(setup):
    old, url, _ = setup
    name = "/sf/to-delete"
    assert local_version(url, name) is None
    r = requests.delete(url + "/files" + name, params={"last_modified": email.utils.formatdate(time.time())},
                        timeout=10)
    assert r.status_code == 200, r.headers.get("X-Exception")
    for _ in range(2):  # no fallback: the delete wins for good
        assert requests.get(url + "/files" + name, timeout=10).status_code == 404
        assert requests.head(url + "/files" + name, timeout=10).status_code == 404
    assert requests.get(old.url + "/files" + name, timeout=10).status_code == 200  # never written
    r = requests.delete(url + "/files/sf/nowhere", params={"last_modified": email.utils.formatdate(time.time())},
                        timeout=10)
    assert r.status_code == 404


def test_writes_older_than_the_old_servers_file_change_nothing(setup):
    """A PUT or DELETE at a version older than the old server's file changed the name when no
    read had copied it in yet: the newer file is now copied in first, and the merge rule judges."""
    old, url, _ = setup
    name = "/sf/newer/put"
    data, version = FILES[name]
    r = requests.put(url + "/files" + name, params={"last_modified": email.utils.formatdate(version - 10)},
                     data=b"older", timeout=10)
    assert r.status_code == 200 and r.text == "a newer version is stored\n", r.text
    assert version_of(r) == version
    assert local_version(url, name) == version
    assert requests.get(url + "/files" + name, timeout=10).content == data
    name = "/sf/newer/delete"
    data, version = FILES[name]
    r = requests.delete(url + "/files" + name, params={"last_modified": email.utils.formatdate(version - 10)},
                        timeout=10)
    assert r.status_code == 200 and r.text == "a newer version is stored; nothing deleted\n", r.text
    assert version_of(r) == version
    assert requests.get(url + "/files" + name, timeout=10).content == data


def test_delete_after_copy_is_never_undone(setup):
    old, url, _ = setup
    name = "/sf/copied-then-deleted"
    data, version = FILES[name]
    assert requests.get(url + "/files" + name, timeout=10).content == data
    assert wait_until(lambda: local_version(url, name) == version, 10, interval=0.05)
    r = requests.delete(url + "/files" + name, params={"last_modified": email.utils.formatdate(time.time())},
                        timeout=10)
    assert r.status_code == 200
    for _ in range(3):
        assert requests.get(url + "/files" + name, timeout=10).status_code == 404
    assert requests.get(old.url + "/files" + name, timeout=10).content == data


def test_listing_merges_old_names(setup):
    old, url, _ = setup
    requests.get(url + "/files/sf/a.txt", timeout=10)  # copied by the first test or now
    r = requests.get(url + "/list/sf", timeout=10)
    assert r.status_code == 200
    got = r.text.splitlines()
    assert "to-delete" not in got and "copied-then-deleted" not in got
    assert {"a.txt", "deep/b.bin", "c.txt", "no-copy.txt", "for-2x.bin"} <= set(got)
    assert got == sorted(got) and len(got) == len(set(got))
    r = requests.get(url + "/list/sf/", params={"last_modified": email.utils.formatdate(V + 2)}, timeout=10)
    assert r.text.splitlines() == ["a.txt", "deep/b.bin"]
    assert requests.get(url + "/list/nothing-here", timeout=10).text == ""


def test_published_2x_client_reads_through_our_server(setup, tmp_path):
    old, url, _ = setup
    data, _version = FILES["/sf/for-2x.bin"]
    out = tmp_path / "b.bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FILETRACKER_URL")}
    p = subprocess.run([ft2.ft2_script("filetracker"), "-r", url, "-c", str(tmp_path / "cache"), "get", "/sf/for-2x.bin", str(out)],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert out.read_bytes() == data


def test_old_server_down_is_502(tmp_path):
    svc, url = our_server(str(tmp_path), "down", "--fallback-url", "http://127.0.0.1:%d" % free_port())
    try:
        r = requests.get(url + "/files/sf/a.txt", timeout=10)
        assert r.status_code == 502 and "old server" in r.headers["X-Exception"] and "Traceback" not in r.text
        # writes and local reads still work
        r = requests.put(url + "/files/x", params={"last_modified": email.utils.formatdate(V)}, data=b"x", timeout=10)
        assert r.status_code == 200 and requests.get(url + "/files/x", timeout=10).content == b"x"
        # and do not wait for it again: within 10 s of a failure the check before a write is skipped
        # (a hung old server added its whole timeout to every PUT)
        for i in range(3):
            r = requests.put(url + "/files/y%d" % i, params={"last_modified": email.utils.formatdate(V)}, data=b"y",
                             timeout=10)
            assert r.status_code == 200
        with open(os.path.join(str(tmp_path), "down.log")) as f:
            assert "before a write" not in f.read()
    finally:
        svc.stop()


def test_a_web_page_is_not_a_listing(tmp_path):
    """A fallback URL that is an ordinary web server: its HTML was listed, a name per line."""
    site = tmp_path / "site"
    (site / "list" / "sf").mkdir(parents=True)   # /list/sf/ answers 200 with an HTML index
    (site / "list" / "sf" / "page.html").write_text("<html>x</html>")
    port = free_port()
    web = Service([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(site)],
                  str(tmp_path / "web.log"), ready_url="http://127.0.0.1:%d/" % port).start()
    try:
        svc, url = our_server(str(tmp_path), "html", "--fallback-url", "http://127.0.0.1:%d" % port)
        try:
            r = requests.put(url + "/files/sf/mine", params={"last_modified": email.utils.formatdate(V)}, data=b"x",
                             timeout=10)
            assert r.status_code == 200
            r = requests.get(url + "/list/sf/", timeout=10)
            assert r.status_code == 502, r.text
            assert r.headers["X-Exception"] == ("listing the old server failed: its listing is text/html, not "
                                                "text/plain: is the fallback URL a filetracker server?")
        finally:
            svc.stop()
    finally:
        web.stop()


def test_flag_errors(tmp_path):
    for args in (["--fallback-no-copy"], ["--fallback-url", "ftp://x"]):
        p = subprocess.run([script("filetracker-server"), "-d", str(tmp_path), "-p", "1"] + args,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "fallback" in p.stderr
