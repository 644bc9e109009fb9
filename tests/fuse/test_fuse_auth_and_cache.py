"""Two more things a shell user relies on, through real mounts of our server:

* auth refused -> EACCES: a mount with a read-only token in its URL reads but
  cannot write (the write fails with "Permission denied" and nothing is
  stored); a mount without credentials cannot even read;
* the cache is shared in both directions: a file fetched by ``Client`` into
  the cache is served by a fresh mount on the same cache without being
  downloaded again (GETs counted at a relay).
"""

import errno
import os
import subprocess
import time
import urllib.parse

import pytest
import requests

from filetracker.client import Client
from tests.fuse.conftest import Backend, is_mounted, unmount
from tests.fuse.proxy import CountingProxy
from tests.support.procs import Service, free_port, script


def add_token(auth_file, user, scope):
    out = subprocess.run([script("filetracker-admin"), "token", "add", "--auth-file", auth_file,
                          "--user", user, "--scope", scope],
                         capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip().splitlines()[0]


@pytest.fixture
def auth_server(tmp_path):
    """Our server with ``--auth-file``: ``(backend, read token, write token)``."""
    auth_file = str(tmp_path / "tokens")
    reader = add_token(auth_file, "reader", "read")
    writer = add_token(auth_file, "writer", "write")
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    data = str(tmp_path / "server-data")
    os.makedirs(data)
    svc = Service([script("filetracker-server"), "--dir", data, "--port", str(port),
                   "--auth-file", auth_file, "--log-level", "WARNING"],
                  str(tmp_path / "server.log"), ready_url=url + "/version/").start()
    backend = Backend("server", url, [svc])
    try:
        yield backend, reader, writer
    finally:
        backend.stop()


def with_user(url, user, token):
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc="%s:%s@%s" % (user, token, parts.netloc)).geturl()


def gone_within(path, seconds):
    deadline = time.monotonic() + seconds
    while os.path.exists(path):
        assert time.monotonic() < deadline, "%s still shown after a refused upload" % path
        time.sleep(0.1)


def test_auth_refused_is_eacces(auth_server, mount_factory):
    backend, reader, writer = auth_server
    writer_url = with_user(backend.url, "writer", writer)
    r = requests.put(writer_url + "/files/sec/readme.txt", data=b"secret\n",
                     params={"last_modified": "Tue, 24 Nov 2026 20:00:00 -0000"}, timeout=10)
    assert r.status_code == 200, r.headers.get("X-Exception")

    ro = mount_factory(with_user(backend.url, "reader", reader), name="reader")
    assert open(ro.p("sec/readme.txt"), "rb").read() == b"secret\n"
    with pytest.raises(PermissionError) as exc:
        with open(ro.p("sec/new.txt"), "wb") as f:  # staged locally; the upload on close is refused
            f.write(b"must not be stored\n")
    assert exc.value.errno == errno.EACCES
    gone_within(ro.p("sec/new.txt"), 3.0)  # the kernel may remember the created entry briefly
    # cp reports the error of close(), where the refused upload surfaces.  (A bash
    # redirection does not check close(): the error goes unseen, nothing is stored either.)
    src = os.path.join(os.path.dirname(ro.path), "local.txt")
    with open(src, "wb") as f:
        f.write(b"hi\n")
    proc = subprocess.run(["cp", src, ro.p("sec/shell.txt")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc
    gone_within(ro.p("sec/shell.txt"), 3.0)
    assert sorted(os.listdir(ro.p("sec"))) == ["readme.txt"]
    for name in ("/sec/new.txt", "/sec/shell.txt"):
        assert requests.head(writer_url + "/files" + name, timeout=10).status_code == 404
    assert requests.get(writer_url + "/list/sec", timeout=10).text == "readme.txt\n"

    anon = mount_factory(backend.url, name="anon")
    with pytest.raises(PermissionError) as exc:
        open(anon.p("sec/readme.txt"), "rb").read()
    assert exc.value.errno == errno.EACCES
    with pytest.raises(PermissionError):
        os.listdir(anon.p("sec"))


def test_mount_with_wrong_credentials_is_refused(auth_server, tmp_path):
    """Credentials the server does not know: one line and exit 1, not a mount that answers every
    access with "Permission denied" (the server's /version/, checked first, is open to all)."""
    backend, reader, _writer = auth_server
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        proc = subprocess.run([script("filetracker-fuse"), str(mnt), "--url",
                               with_user(backend.url, "reader", "bad" + reader), "--cache-dir", str(tmp_path / "cache")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and not is_mounted(str(mnt)), proc
    finally:
        unmount(str(mnt))  # should it have mounted after all (the daemon goes with its mount)
    assert proc.stderr == "filetracker-fuse: the server at %s refuses the credentials in the URL: invalid credentials\n" \
        % backend.url, proc.stderr
    assert "bad" + reader not in proc.stderr


def test_file_fetched_by_client_is_not_downloaded_again(server, mount_factory, tmp_path):
    cache = str(tmp_path / "shared-cache")
    data = os.urandom(3 << 20)
    (tmp_path / "src").write_bytes(data)
    uploader = Client(cache_dir=str(tmp_path / "uploader"), remote_url=server.url)
    uploader.put_file("/shared/blob.bin", str(tmp_path / "src"), to_local_store=False)

    # A Python user on the machine fetches it into the shared cache.
    Client(cache_dir=cache, remote_url=server.url).get_file("/shared/blob.bin", str(tmp_path / "copy"))

    target = urllib.parse.urlsplit(server.url)
    proxy = CountingProxy((target.hostname, target.port))
    try:
        m = mount_factory(proxy.url, cache_dir=cache)
        before = len(proxy.requests)
        with open(m.p("shared/blob.bin"), "rb") as f:
            assert f.read() == data
        asked = proxy.requests[before:]
        assert not [r for r in asked if r[1].startswith("/files/")], asked  # no GET, no HEAD either
        assert proxy.downstream_bytes < 64 * 1024
    finally:
        proxy.close()


def test_written_files_land_in_the_cache_readable_by_others(server, mount_factory, tmp_path):
    """A file written through the mount is cached with the umask's mode (0644), as a download is."""
    old_umask = os.umask(0o022)  # the mount inherits it
    try:
        m = mount_factory(server.url)
    finally:
        os.umask(old_umask)
    os.makedirs(m.p("perm"))
    with open(m.p("perm/w.txt"), "w") as f:
        f.write("shared\n")
    cached = os.path.join(m.cache_dir, "files", "perm", "w.txt")
    deadline = time.monotonic() + 15  # handed to the cache at release, after close returned
    while not os.path.exists(cached):
        assert time.monotonic() < deadline, "not cached"
        time.sleep(0.05)
    assert os.stat(cached).st_mode & 0o777 == 0o644


def test_an_upload_a_newer_version_beat_is_not_cached_as_that_version(server, mount_factory, tmp_path):
    """A write whose upload the server answers with a newer version (stored meanwhile from
    elsewhere: the server keeps the newer one) is not cached under that version: the cache
    would then serve this mount's bytes as the other writer's (found by a client review)."""
    m = mount_factory(server.url, args=["--attr-timeout", "60"])
    os.makedirs(m.p("race"))
    with open(m.p("race/f"), "wb") as f:
        f.write(b"ours 1")
    cached = os.path.join(m.cache_dir, "files", "race", "f")
    deadline = time.monotonic() + 15  # handed to the cache at release, after close returned
    while not os.path.exists(cached):
        assert time.monotonic() < deadline, "not cached"
        time.sleep(0.05)
    newer = int(os.stat(cached).st_mtime) + 100
    theirs = tmp_path / "theirs"
    theirs.write_bytes(b"theirs")
    Client(cache_dir="", remote_url=server.url).put_file("/race/f@%d" % newer, str(theirs))
    with open(m.p("race/f"), "wb") as f:   # the mount still holds the first version's attributes
        f.write(b"ours 2, longer than theirs")
    m.wait_writers_released()
    out = str(tmp_path / "out")
    reader = Client(cache_dir=m.cache_dir, remote_url=server.url)
    assert reader.get_file("/race/f@%d" % newer, out) == "/race/f@%d" % newer
    with open(out, "rb") as f:
        assert f.read() == b"theirs"
    # and the mount shows the version kept, at its own size (not the size this mount wrote)
    assert os.stat(m.p("race/f")).st_size == len(b"theirs")
    with open(m.p("race/f"), "rb") as f:
        assert f.read() == b"theirs"
