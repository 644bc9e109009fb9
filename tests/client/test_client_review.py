"""Client bugs found by a review that drove a real server (each test failed on the code before):

* a process forked after a request shared its parent's pooled connection, and each read the
  other's answers (a multiprocessing or Celery worker got another file's bytes);
* the cache kept its own content at a version where the server kept another (two uploads in
  one second), and a forced refresh could not mend it;
* ``rm`` then ``put`` of a name within one second failed with 409 (2.x stored it);
* ``get NAME /dev/stdout`` with the output appended to a file replaced that file;
* a gzip answer cut short, sent without ``Content-Length``, was taken as the whole file;
* a cache-only client called a folder of its cache a file.
"""

import gzip
import hashlib
import http.server
import os
import subprocess
import threading
import time

import pytest

from filetracker.client import Client
from filetracker.client.remote_data_store import RemoteDataStore
from filetracker.errors import ContentConflictError, NotFoundError, RemoteError
from tests.support.procs import script

T = 1_700_000_000


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class _PortsHandler(http.server.BaseHTTPRequestHandler):
    """Answers HEAD with a version, keeping the connection; notes each request's client port."""

    protocol_version = "HTTP/1.1"
    ports = []

    def do_HEAD(self):
        self.ports.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _serve(handler):
    """A server of ``handler`` on a free loopback port in a thread of this process."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True   # server_close does not wait for the clients' keep-alive connections
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_forked_child_makes_its_own_connections():
    """Sharing the parent's pooled socket, parent and child read each other's answers (a
    review saw 300 reads of two files in two processes get the other's bytes; which answer
    goes where depends on timing, so this checks the cause: the connection used)."""
    server = _serve(_PortsHandler)
    try:
        ports = _PortsHandler.ports = []
        store = RemoteDataStore("http://127.0.0.1:%d" % server.server_address[1])
        assert store.file_version("/x") == T   # a pooled keep-alive connection, then the fork
        pid = os.fork()
        if pid == 0:   # the child: its verdict is its exit code; never back into pytest
            code = 2
            try:
                code = 0 if store.file_version("/x") == T else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.file_version("/x") == T
        assert len(ports) == 3 and ports[0] == ports[2], ports   # the parent keeps its connection
        assert ports[1] != ports[0], "the child used its parent's connection"
    finally:
        server.shutdown()
        server.server_close()


def _two_contents():
    """Two contents ordered as the server breaks a tie between them: (loser, winner)."""
    a, b = b"content A\n", b"content B\n"
    return (a, b) if hashlib.sha256(a).hexdigest() < hashlib.sha256(b).hexdigest() else (b, a)


def test_the_cache_holds_what_the_server_kept_at_one_version(shared_server, tmp_path):
    loser, winner = _two_contents()
    name = "/tie/w@%d" % T
    # one client puts both in one second (at one version): the server keeps the winner
    c = Client(cache_dir=str(tmp_path / "c"), remote_url=shared_server.url)
    c.put_file(name, write(tmp_path / "1", loser))
    assert c.put_file(name, write(tmp_path / "2", winner)) == name
    c.get_file(name, str(tmp_path / "out"))   # versioned: from the cache
    assert read(tmp_path / "out") == winner
    # the other order: the loser's upload is refused and the cache keeps the winner
    with pytest.raises(ContentConflictError):
        c.put_file(name, write(tmp_path / "3", loser))
    c.get_file(name, str(tmp_path / "out"))
    assert read(tmp_path / "out") == winner
    # a cache that got the loser from a put of its own (the winner came from elsewhere):
    # a forced refresh replaces it
    name2 = "/tie/x@%d" % T
    d = Client(cache_dir=str(tmp_path / "d"), remote_url=shared_server.url)
    d.put_file(name2, write(tmp_path / "4", loser))
    Client(cache_dir="", remote_url=shared_server.url).put_file(name2, write(tmp_path / "5", winner))
    d.get_file(name2, str(tmp_path / "out"))
    assert read(tmp_path / "out") == loser   # what the cache holds, until refreshed
    d.get_file(name2, str(tmp_path / "out"), force_refresh=True)
    assert read(tmp_path / "out") == winner
    d.get_file(name2, str(tmp_path / "out"))
    assert read(tmp_path / "out") == winner
    stream, _ = d.get_stream(name2)
    with stream:
        assert stream.read() == winner


def _at_the_start_of_a_second():
    """Sleep to just after a second begins, so what follows happens within that second."""
    time.sleep(1.02 - time.time() % 1)


@pytest.mark.parametrize("cached", [True, False])
def test_rm_then_put_within_one_second(shared_server, tmp_path, cached):
    c = Client(cache_dir=str(tmp_path / "c") if cached else "", remote_url=shared_server.url)
    c.put_file("/re/z@%d" % T, write(tmp_path / "1", b"first"))
    _at_the_start_of_a_second()
    c.delete_file("/re/z")
    vname = c.put_file("/re/z", write(tmp_path / "2", b"second"))
    assert c.file_version("/re/z") == int(vname.split("@")[1])
    c.get_file("/re/z", str(tmp_path / "out"))
    assert read(tmp_path / "out") == b"second"
    # the store itself, as a user's code may call it
    store = RemoteDataStore(shared_server.url)
    _at_the_start_of_a_second()
    store.delete_file("/re/z")
    vname = store.add_file("/re/z", write(tmp_path / "3", b"third"))
    stream, got = store.get_stream("/re/z")
    with stream:
        assert (stream.read(), got) == (b"third", vname)


@pytest.mark.parametrize("cached", [True, False])
def test_unversioned_puts_and_a_delete_in_one_second_take_effect_in_order(shared_server, tmp_path, cached):
    """The second put of a second loses the tie or wins it; when it loses it goes a second up.
    The third and fourth then found that version newer than "now": they were not stored, and
    told the second's name, and a delete after them deleted nothing (review, 2026-11-29)."""
    c = Client(cache_dir=str(tmp_path / "c") if cached else "", remote_url=shared_server.url)
    _at_the_start_of_a_second()
    for i in range(4):
        vname = c.put_file("/burst/x", write(tmp_path / str(i), b"content %d" % i))
        stream, got = RemoteDataStore(shared_server.url).get_stream("/burst/x")
        with stream:
            assert (stream.read(), got) == (b"content %d" % i, vname)
    c.get_file("/burst/x", str(tmp_path / "out"))
    assert read(tmp_path / "out") == b"content 3"
    c.delete_file("/burst/x")
    with pytest.raises(NotFoundError):
        c.get_file("/burst/x", str(tmp_path / "out"))
    vname = c.put_file("/burst/x", write(tmp_path / "again", b"again"))
    c.get_file("/burst/x", str(tmp_path / "out"))
    assert read(tmp_path / "out") == b"again" and c.file_version("/burst/x") == int(vname.split("@")[1])


def test_unversioned_puts_racing_on_one_name_never_fail(shared_server, tmp_path):
    """Writers racing on one name each go past the other's second: none gets a
    ContentConflictError (there is no version for its caller to change), the name ends with
    one of the contents, named by the version its put returned, and no version is sent more
    than a second ahead of the clock (each waits for the clock instead)."""
    errors, returned = [], []

    def writer(k):
        c = Client(cache_dir="", remote_url=shared_server.url)
        for i in range(4):
            try:
                returned.append((c.put_file("/race/x", write(tmp_path / ("%d-%d" % (k, i)), b"%d-%d" % (k, i))),
                                 b"%d-%d" % (k, i)))
            except Exception as e:   # noqa: BLE001 - any failure is the finding
                errors.append(e)
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    stream, got = RemoteDataStore(shared_server.url).get_stream("/race/x")
    with stream:
        assert (got, stream.read()) in returned
    assert int(got.split("@")[1]) <= time.time() + 1


def test_get_to_dev_stdout_writes_into_the_callers_output(shared_server, tmp_path):
    c = Client(cache_dir="", remote_url=shared_server.url)
    c.put_file("/cat/a@%d" % T, write(tmp_path / "a", b"AAA\n"))
    c.put_file("/cat/b@%d" % T, write(tmp_path / "b", b"BBB\n"))
    ft = script("filetracker")
    env = dict(os.environ, FILETRACKER_URL=shared_server.url, FILETRACKER_DIR=str(tmp_path / "cache"))
    shell = ("echo header > combined.txt; { %s get /cat/a /dev/stdout && %s get /cat/b /dev/fd/1; } >> combined.txt"
             " && %s get /cat/a /dev/stdout > single.txt" % (ft, ft, ft))
    r = subprocess.run(["bash", "-c", shell], cwd=str(tmp_path), env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert read(tmp_path / "combined.txt") == b"header\nAAA\nBBB\n"
    assert read(tmp_path / "single.txt") == b"AAA\n"
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "cache", "combined.txt", "single.txt"]


class _CutGzipHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with half of a gzip body, no Content-Length, then closes (as a
    proxy cut off mid-answer could)."""

    protocol_version = "HTTP/1.0"
    data = b"y" * 100_000

    def do_GET(self):
        body = gzip.compress(self.data)
        self.send_response(200)
        self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Logical-Size", str(len(self.data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[:len(body) // 2])

    def log_message(self, *args):
        pass


@pytest.fixture
def cut_server():
    server = _serve(_CutGzipHandler)
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_cut_gzip_answer_without_length_is_refused(cut_server, tmp_path):
    store = RemoteDataStore(cut_server)
    out = tmp_path / "out"
    with pytest.raises(RemoteError, match="cut short: .* of 100000 bytes"):
        store.get_file("/t/x", str(out))
    assert not out.exists() and os.listdir(tmp_path) == []
    stream, _ = store.get_stream("/t/x")
    with stream, pytest.raises(RemoteError, match="cut short"):
        stream.read()
    c = Client(cache_dir=str(tmp_path / "cache"), remote_url=cut_server)
    with pytest.raises(RemoteError, match="cut short"):
        c.get_file("/t/x", str(out))
    assert not out.exists() and c.list_local_files() == []


def test_a_cache_folder_is_not_a_file(tmp_path):
    c = Client(cache_dir=str(tmp_path / "cache"))
    c.put_file("/dir/inner@%d" % T, write(tmp_path / "f", b"x"))
    for name in ("/dir", "/dir@%d" % T, "/dir/inner/below"):
        with pytest.raises(NotFoundError):
            c.file_version(name)
        with pytest.raises(NotFoundError):
            c.file_size(name)
    c.delete_file("/dir")   # nothing to delete: the file below stays
    assert c.file_version("/dir/inner") == T


@pytest.mark.parametrize("from_cache", [False, True])
def test_editing_a_file_got_leaves_the_cache_alone(shared_server, tmp_path, from_cache):
    """``get`` hard-linked the destination to the cache's file: a user's edit (2.x wrote a
    copy) changed the cached file and its mtime, its version, so the cache served the edit as
    the store's file and ``get -f`` could not replace it (it looked newer)."""
    name = "/review/edit-%d" % from_cache
    c = Client(cache_dir=str(tmp_path / "c"), remote_url=shared_server.url)
    vname = c.put_file(name + "@1700000000", write(tmp_path / "src", b"hello\n"), to_local_store=from_cache)
    mine = str(tmp_path / "mine.txt")
    assert c.get_file(vname, mine) == vname   # versioned: from the cache when it is there
    assert os.stat(mine).st_nlink == 1
    with open(mine, "ab") as f:
        f.write(b"local edit\n")
    offline = Client(cache_dir=str(tmp_path / "c"), remote_url=None)
    stream, got = offline.get_stream(name)
    with stream:
        assert (stream.read(), got) == (b"hello\n", vname)
    assert c.get_file(name, str(tmp_path / "other.txt")) == vname
    assert read(tmp_path / "other.txt") == b"hello\n"


def test_the_cache_copies_the_download_not_what_is_at_the_destination_later(shared_server, tmp_path,
                                                                             monkeypatch):
    """Another process renaming another version to the same destination right after this
    download's rename: the cache took its copy from the destination and held those bytes
    under this version's name (review, 2026-11-29)."""
    from filetracker.client import _files
    name = "/cachecopy/x@%d" % T
    Client(cache_dir="", remote_url=shared_server.url).put_file(name, write(tmp_path / "src", b"this version"))
    real_replace = _files.replace_into
    raced = []

    def replace_then_another_process_replaces(tmp, path):
        real_replace(tmp, path)
        if not raced:
            raced.append(path)
            other = write(tmp_path / "other", b"another version, renamed here by someone else")
            os.replace(other, path)
    monkeypatch.setattr(_files, "replace_into", replace_then_another_process_replaces)
    c = Client(cache_dir=str(tmp_path / "c"), remote_url=shared_server.url)
    assert c.get_file(name, str(tmp_path / "dst")) == name and raced
    monkeypatch.undo()
    c.get_file(name, str(tmp_path / "again"))    # versioned: from the cache
    assert read(tmp_path / "again") == b"this version"
