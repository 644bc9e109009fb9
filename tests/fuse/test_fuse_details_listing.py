"""A cold mount resolves paths with the listing with details: ``ls -l`` of a
folder of 200 files is exactly one request at our server and at the gateway
(counted at a relay), with the right sizes (logical, also of gzip-stored
files) and mtimes (the versions); a lookup of a file or of nothing is one
request too."""

import errno
import gzip
import hashlib
import os
import subprocess
import urllib.parse

import pytest
import requests

from filetracker.client import Client
from filetracker.fuse import tree
from filetracker.fuse.errnos import FsError
from filetracker.fuse.fs import Attr, FiletrackerFS
from filetracker.fuse.remote import Remote
from filetracker.httpdate import format_version
from tests.fuse.proxy import CountingProxy

FILES = 200
BASE = 1_790_000_000


def put(session, url, name, data, version, compress=False):
    headers = {"SHA256-Checksum": hashlib.sha256(data).hexdigest()}
    body = data
    if compress:
        body = gzip.compress(data)
        headers.update({"Content-Encoding": "gzip", "Logical-Size": str(len(data))})
    r = session.put(url + "/files" + name, params={"last_modified": format_version(version)},
                    data=body, headers=headers, timeout=30)
    assert r.status_code == 200, (r.status_code, r.headers.get("X-Exception"))


def expected_files():
    """``{name: (size, version, compressed)}`` of the folder (every 10th stored gzip)."""
    return {"f%03d.bin" % i: (i * 37, BASE + i * 61, i % 10 == 0) for i in range(FILES)}


def ls_l(path):
    """``{name: (size, mtime)}`` from ``ls -l`` (mtimes as Unix seconds)."""
    out = subprocess.run(["ls", "-l", "--time-style=+%s", path], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    got = {}
    for line in out.splitlines()[1:]:  # "total ..." first
        fields = line.split()
        got[fields[6]] = (int(fields[4]), int(fields[5]))
    return got


def test_cold_ls_l_is_one_request(backend, mount_factory):
    files = expected_files()
    with requests.Session() as s:
        for name, (size, version, compressed) in files.items():
            put(s, backend.url, "/big/" + name, (b"%d," % size * size)[:size], version, compressed)
        put(s, backend.url, "/lone.txt", b"top level\n", BASE)
    target = urllib.parse.urlsplit(backend.url)
    proxy = CountingProxy((target.hostname, target.port))
    try:
        m = mount_factory(proxy.url, args=["--attr-timeout", "30"])
        before = len(proxy.requests)
        got = ls_l(m.p("big"))
        first = proxy.requests[before:]
        assert len(first) == 1, first[:10]
        assert first[0][0] == "GET" and first[0][1].startswith("/list/big?") and "details=1" in first[0][1]
        assert got == {name: (size, version) for name, (size, version, _) in files.items()}

        # A file whose folder was never listed, and a name that does not exist: one request each.
        mark = len(proxy.requests)
        st = os.stat(m.p("lone.txt"))
        assert (st.st_size, int(st.st_mtime)) == (10, BASE)
        assert len(proxy.requests) - mark == 1, proxy.requests[mark:]
        mark = len(proxy.requests)
        assert not os.path.exists(m.p("no-such-thing"))
        assert len(proxy.requests) - mark == 1, proxy.requests[mark:]
        assert not any(r[0] == "HEAD" for r in proxy.requests[before:])

        # Within the attribute timeout: nothing more.
        mark = len(proxy.requests)
        assert ls_l(m.p("big")) == got
        os.stat(m.p("big/f007.bin"))
        assert proxy.requests[mark:] == []
    finally:
        proxy.close()


@pytest.mark.no_fuse_needed
def test_lookup_costs_with_and_without_details(server, tmp_path):
    """The filesystem object itself (no mount): one listing per unknown path with a server
    offering details; HEAD first (then a listing for a folder) when it does not."""
    with requests.Session() as s:
        put(s, server.url, "/dir/a.txt", b"abc", BASE)
        put(s, server.url, "/top.txt", b"top\n", BASE + 1)
    target = urllib.parse.urlsplit(server.url)
    proxy = CountingProxy((target.hostname, target.port))
    try:
        def fresh(name):
            client = Client(cache_dir=str(tmp_path / name), remote_url=proxy.url)
            return FiletrackerFS(client, Remote(proxy.url, timeout=10), attr_timeout=30)

        def cost(fs, path):
            mark = len(proxy.requests)
            try:
                attr = fs._lookup(path)
            except FsError as e:
                attr = e.errno
            return attr, [(m, t.split("?")[0]) for m, t in proxy.requests[mark:]]

        fs = fresh("with")
        assert cost(fs, "/dir") == (Attr(tree.DIR, 0, None), [("GET", "/list/dir")])
        assert cost(fs, "/dir/a.txt") == (Attr(tree.FILE, 3, BASE), [])  # came with the listing
        assert cost(fs, "/top.txt") == (Attr(tree.FILE, 4, BASE + 1), [("GET", "/list/top.txt")])
        assert cost(fs, "/nope") == (errno.ENOENT, [("GET", "/list/nope")])
        assert fs.remote.offers_details is True

        fs = fresh("without")

        def without(path):
            fs.remote.offers_details = False  # as learned from a server without the extension
            return cost(fs, path)

        assert without("/top.txt") == (Attr(tree.FILE, 4, BASE + 1), [("HEAD", "/files/top.txt")])
        assert without("/dir") == (Attr(tree.DIR, 0, None), [("HEAD", "/files/dir"), ("GET", "/list/dir")])
        assert without("/nope") == (errno.ENOENT, [("HEAD", "/files/nope"), ("GET", "/list/nope")])
    finally:
        proxy.close()
