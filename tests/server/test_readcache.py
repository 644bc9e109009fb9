"""filetracker-server's read cache: answers identical to the uncached path, every write visible
at once, off with --workers N > 1."""

import requests

from filetracker.httpdate import format_version, parse_version
from tests.server.conftest import start_server
from tests.support.races import race_writes_and_reads

V = 1_700_000_000


def put(url, name, data, version):
    r = requests.put(url + "/files" + name, data=data, params={"last_modified": format_version(version)},
                     timeout=30)
    assert r.status_code == 200, r.text
    return r


def answer(url, name, method="GET", **headers):
    r = requests.request(method, url + "/files" + name, headers=headers, timeout=30)
    keep = ("Content-Type", "Accept-Ranges", "Last-Modified", "Content-Length", "Content-Range", "X-Exception")
    return r.status_code, {k: r.headers.get(k) for k in keep}, r.content


def test_cached_answers_equal_uncached_ones(tmp_path):
    cached = start_server(tmp_path, "cached")
    plain = start_server(tmp_path, "plain", extra=["--read-cache-bytes", "0"])
    try:
        files = {"/a/empty": b"", "/a/small": b"0123456789", "/a/big": bytes(range(256)) * 1024}
        for s in (cached, plain):
            for i, (name, data) in enumerate(files.items()):
                put(s.url, name, data, V + i)
            put(s.url, "/a/gone", b"x", V)
            assert requests.delete(s.url + "/files/a/gone", timeout=30,
                                   params={"last_modified": format_version(V + 5)}).status_code == 200
        for _ in range(3):  # first round fills the cache, the others answer from it
            for name in list(files) + ["/a/gone", "/a/never"]:
                for method, headers in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=2-4"})):
                    got, want = answer(cached.url, name, method, **headers), answer(plain.url, name, method,
                                                                                    **headers)
                    assert got == want, (name, method, headers)
    finally:
        cached.stop()
        plain.stop()


def test_a_write_is_visible_at_once_on_every_read(tmp_path):
    s = start_server(tmp_path)
    try:
        name = "/w/f"
        put(s.url, name, b"one", V + 1)
        for _ in range(2):
            assert requests.get(s.url + "/files" + name, timeout=30).content == b"one"
        put(s.url, name, b"two", V + 2)
        r = requests.get(s.url + "/files" + name, timeout=30)
        assert r.content == b"two" and parse_version(r.headers["Last-Modified"]) == V + 2
        assert requests.head(s.url + "/files" + name, timeout=30).headers["Content-Length"] == "3"
        requests.delete(s.url + "/files" + name, params={"last_modified": format_version(V + 3)}, timeout=30)
        assert requests.get(s.url + "/files" + name, timeout=30).status_code == 404
        assert requests.head(s.url + "/files" + name, timeout=30).status_code == 404
        put(s.url, name, b"four", V + 4)
        assert requests.get(s.url + "/files" + name, timeout=30).content == b"four"
    finally:
        s.stop()


def test_reads_racing_writes_never_go_back(tmp_path):
    s = start_server(tmp_path)
    try:
        name = "/race/f"
        put(s.url, name, b"%d" % V, V)

        def read():
            r = requests.get(s.url + "/files" + name, timeout=30)
            return parse_version(r.headers["Last-Modified"]), r.content

        errors, last = race_writes_and_reads(lambda v: put(s.url, name, b"%d" % v, v), [read] * 3, V, 120)
        assert not errors, errors[:3]
        assert last == V + 120
    finally:
        s.stop()


def test_workers_run_without_a_cache(tmp_path):
    """Two processes share one store: each answers writes made through the other at once."""
    s = start_server(tmp_path, extra=["--workers", "2"])
    try:
        for i in range(30):  # new connections land on either worker
            put(s.url, "/multi/f", b"v%d" % i, V + i)
            for _ in range(2):
                r = requests.get(s.url + "/files/multi/f", timeout=30, headers={"Connection": "close"})
                assert r.content == b"v%d" % i
    finally:
        s.stop()
