"""``ls -l`` of a folder costs one listing with details (one request in all, the
folder's own lookup included), and nothing more within the attribute timeout
(counted at a relay); the pipelined HEADs serve servers without details."""

import subprocess
import urllib.parse

import pytest
import requests

from filetracker.fuse.remote import Remote
from tests.fuse.proxy import CountingProxy

FILES = 300


def fill(url, count):
    s = requests.Session()
    for i in range(count):
        r = s.put(url + "/files/many/f%04d.txt" % i, data=b"x" * i,
                  params={"last_modified": "Tue, 24 Nov 2026 20:00:00 -0000"}, timeout=30)
        r.raise_for_status()


@pytest.mark.no_fuse_needed
def test_stat_many_pipelined(server):
    fill(server.url, 50)
    remote = Remote(server.url, timeout=10)
    names = ["/many/f%04d.txt" % i for i in range(50)] + ["/many/missing"]
    got = remote.stat_many(names, connections=3)
    assert got == {"/many/f%04d.txt" % i: (1795550400, i) for i in range(50)}
    assert remote.stat_many([]) == {}
    assert Remote("http://127.0.0.1:9", timeout=1).stat_many(names) == {}  # nothing answers: nothing found


def test_ls_l_costs_one_listing(server, mount_factory):
    fill(server.url, FILES)
    target = urllib.parse.urlsplit(server.url)
    proxy = CountingProxy((target.hostname, target.port))
    try:
        m = mount_factory(proxy.url, args=["--attr-timeout", "5"])
        before = len(proxy.requests)
        out = subprocess.run(["ls", "-l", m.p("many")], capture_output=True, text=True, check=True).stdout
        assert len(out.strip().splitlines()) == FILES + 1  # "total" + one line per file
        first = proxy.requests[before:]
        assert len(first) == 1, first[:20]  # the folder's lookup is the listing: no HEAD at all
        assert first[0][0] == "GET" and first[0][1].startswith("/list/many?"), first
        assert "details=1" in first[0][1]
        mark = len(proxy.requests)
        subprocess.run(["ls", "-l", m.p("many")], capture_output=True, check=True)
        subprocess.run(["stat", m.p("many/f0007.txt")], capture_output=True, check=True)
        assert proxy.requests[mark:] == []  # all from the attribute cache
    finally:
        proxy.close()
