"""Non-ASCII names survive the migration from a real 2.x server.

The 2.x server keeps ``/p/ü`` as the link ``links/p/Ã¼`` (the UTF-8 bytes of the request path
read as Latin-1) and lists it so, while its clients reach it as ``/p/ü``.  Both import paths
must give the name the clients used, not the mangled one (before: the HTTP import skipped the
file as "gone from the old server", the folder import stored it under the mangled name).
"""

import email.utils
import os
from urllib.parse import quote

import pytest
import requests

from tests.migration.conftest import run_admin, single_server
from tests.support import upstream
from tests.support.procs import Service, free_port, script

VERSION = 1600000000
NAMES = {"/zadania/zażółć gęślą.txt": b"polish\n", "/p/\u00fcn\u00ef.txt": b"umlauts\n", "/p/ascii.txt": b"plain\n"}


@pytest.fixture(scope="module")
def old_server(tmp_path_factory):
    upstream.require()
    tmp = tmp_path_factory.mktemp("ft2-names")
    server = upstream.UpstreamServer(str(tmp / "data"), log_path=str(tmp / "ft2.log")).start()
    try:
        for name, data in NAMES.items():
            # as the 2.x client sends it: the name's UTF-8 bytes, percent-encoded
            r = requests.put(server.url + "/files" + quote(name), data=data, timeout=30,
                             params={"last_modified": email.utils.formatdate(VERSION)})
            assert r.status_code == 200, r.text
        yield server, str(tmp / "data")
    finally:
        server.stop()


def names_in(url):
    r = requests.get(url + "/list/", timeout=30)
    assert r.status_code == 200
    return sorted("/" + line for line in r.text.splitlines() if line)


def check_target(url):
    assert names_in(url) == sorted(NAMES)
    for name, data in NAMES.items():
        r = requests.get(url + "/files" + quote(name), timeout=30)
        assert r.status_code == 200 and r.content == data, name


def test_the_premise_the_2x_server_mangles_names_on_disk(old_server):
    _, data_dir = old_server
    stored = sorted(os.listdir(os.path.join(data_dir, "links", "p")))
    assert stored == ["ascii.txt", "\u00c3\u00bcn\u00c3\u00af.txt"]


@pytest.mark.parametrize("how", ["http", "dir"])
def test_import_keeps_the_names_clients_used(old_server, tmp_path, how):
    server, data_dir = old_server
    target, url = single_server(str(tmp_path))
    try:
        source = ["--from", server.url] if how == "http" else ["--from-dir", data_dir]
        p = run_admin(["import"] + source + ["--to", url, "--verify"])
        assert p.returncode == 0, p.stdout + p.stderr
        check_target(url)
        if how == "dir":  # a prefix names the folder as clients know it
            other, url2 = single_server(str(tmp_path), "second")
            try:
                p = run_admin(["import", "--from-dir", data_dir, "--prefix", "/zadania", "--to", url2])
                assert p.returncode == 0, p.stdout + p.stderr
                assert names_in(url2) == ["/zadania/zażółć gęślą.txt"]
            finally:
                other.stop()
        p = run_admin(["compare", "--from", server.url, "--to", url])
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        target.stop()


def test_read_through_lists_and_reads_the_names_clients_used(old_server, tmp_path):
    """A server in migration mode (--fallback-url) merges the old server's listing into its own:
    with the names as clients know them, each of which it can then read through."""
    server, _ = old_server
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    ours = Service([script("filetracker-server"), "-p", str(port), "-l", "127.0.0.1", "-d", str(tmp_path / "ours"),
                    "-D", "--fallback-url", server.url, "--fallback-no-copy"], str(tmp_path / "ours.log"),
                   ready_url=url + "/version/").start()
    try:
        check_target(url)
    finally:
        ours.stop()
