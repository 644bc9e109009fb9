"""Server bugs found by a review that drove real servers (each test failed on the code before):
ranges of 5000 digits (a 500 and a traceback), a metric series per made-up HTTP method (kept for
good), and a records file that is no database (a traceback at start)."""

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.client.servers import start_server
from tests.support.procs import free_port, script
from tests.support.rawhttp import status_line, stop_with_an_upload_stuck, upload_head


def test_ranges_of_5000_digits_are_read_as_beyond_any_size(shared_server):
    url = shared_server.url + "/files/review/range"
    assert requests.put(url + "@1700000000", data=b"0123456789", timeout=10).status_code == 200
    for header, status, body in (("bytes=0-" + "9" * 5000, 206, b"0123456789"),
                                 ("bytes=-" + "9" * 5000, 206, b"0123456789"),
                                 ("bytes=" + "0" * 5000 + "3-4", 206, b"34"),   # leading zeros: a small number
                                 ("bytes=" + "1" * 5000 + "-", 416, None)):
        r = requests.get(url, headers={"Range": header}, timeout=10)
        assert r.status_code == status, (header[:20], r.status_code, r.headers.get("X-Exception"))
        if body is not None:
            assert r.content == body


def test_made_up_methods_share_one_metric_label(shared_server):
    for i in range(30):
        requests.request("M%05d" % i, shared_server.url + "/files/review/x", timeout=10)
    text = requests.get(shared_server.url + "/metrics", timeout=10).text
    assert 'method="M0' not in text
    assert 'filetracker_http_requests_total{method="other",route="files",status="405"}' in text


def test_a_records_file_that_is_no_database_is_one_line_at_start(tmp_path):
    server = start_server(tmp_path)   # makes the layout
    server.stop()
    records = [n for n in os.listdir(server.dir) if n.startswith("records")]
    assert records, os.listdir(server.dir)
    for name in records:
        os.remove(os.path.join(server.dir, name))
    with open(os.path.join(server.dir, "records.sqlite3"), "wb") as f:
        f.write(b"garbage, not a database\n" * 100)
    r = subprocess.run([script("filetracker-server"), "-d", server.dir, "-p", str(server.port), "-D"],
                       capture_output=True, timeout=60)
    assert r.returncode == 1, r
    assert b"Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert b"cannot open the store in" in r.stderr, r.stderr


def test_a_node_whose_records_file_is_no_database_says_so_in_one_line(tmp_path):
    """The same at a storage node's start (its store is the server's)."""
    folder = tmp_path / "node"
    folder.mkdir()
    (folder / "records.sqlite3").write_bytes(b"garbage, not a database\n" * 100)
    r = subprocess.run([script("filetracker-node"), "--dir", str(folder), "--port", str(free_port()), "--peers", "",
                        "--no-background"], capture_output=True, timeout=60)
    assert r.returncode == 1, r
    assert b"Traceback" not in r.stderr and b"cannot open the store in" in r.stderr, r.stderr


def test_sigterm_lets_a_request_in_progress_end(tmp_path):
    """SIGTERM closed every connection at once (a deploy's restart cut uploads and downloads
    short); the requests in progress now end first (SHUTDOWN_GRACE, 5 s at most), then the
    server exits; no new connection is taken meanwhile."""
    server = start_server(tmp_path)
    sock = upload_head(server.url, "/drain/f", 20)
    try:
        sock.sendall(b"0123456789")
        time.sleep(0.3)   # the request is in progress (its handler has the first half)
        server.service.signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(b"abcdefghij")
        assert status_line(sock) == "HTTP/1.1 200 OK"
    finally:
        sock.close()
    assert server.service.proc.wait(timeout=15) == 0
    from filetracker.storage import ObjectStore
    with ObjectStore(server.dir) as store:
        assert store.get_record("/drain/f").size == 20


def test_sigterm_gives_up_on_a_request_that_does_not_end(tmp_path):
    server = start_server(tmp_path)
    stop_with_an_upload_stuck(server.service, server.url, "/drain/stuck")
    log = open(server.log_path).read()
    assert "1 requests did not finish within 5.0s" in log and "abandoned upload failed" not in log, log


def test_concurrent_deletes_of_one_version_all_say_deleted(shared_server):
    """Two DELETEs of the same version racing: the one that finds the other's tombstone already
    stored asked for exactly that outcome, so it says "deleted" too (it said "a newer version is
    stored; nothing deleted", which was false). A DELETE that starts after the tombstone is a 404."""
    urls = [shared_server.url + "/files/review/racing-delete/%d" % i for i in range(24)]
    for url in urls:
        assert requests.put(url + "@1700000000", data=b"x", timeout=10).status_code == 200

    def delete(url):
        r = requests.delete(url + "@1700000100", timeout=30)
        return r.status_code, r.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(delete, [u for u in urls for _ in range(3)]))
    assert {status for status, _ in answers} <= {200, 404}, answers
    assert [text for status, text in answers if status == 200 and text != "deleted\n"] == []
    assert sum(1 for status, _ in answers if status == 200) >= len(urls)
