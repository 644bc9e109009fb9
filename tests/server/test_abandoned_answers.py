"""A client that stops reading a long answer: the server closes quietly, with no ERROR in its log.

Found by a soak: every abandoned ``GET /list/...`` longer than the socket buffers logged
"ERROR tornado.general: Cannot send error response after headers written".  Real server process.
"""

import hashlib
import socket
import time

from filetracker.records import Record
from filetracker.storage import ObjectStore
from tests.client.servers import OurServer

NAMES = 3000
FOLDER = "/abandoned"
LONG = "a" * 200 + "/" + "b" * 200   # long names relative to FOLDER: a listing of 1.2 MB from few records


def _fill(data_dir):
    store = ObjectStore(data_dir)
    try:
        items = []
        for i in range(NAMES):
            upload = store.begin_upload()
            upload.write(b"x")
            items.append((upload, Record("%s/%s/%06d" % (FOLDER, LONG, i), 1700000000, hashlib.sha256(b"x").hexdigest(),
                                         1, False)))
        assert all(isinstance(r, tuple) and r[1] for r in store.commit_uploads(items))
    finally:
        store.close()


def test_a_listing_abandoned_midway_is_not_an_error(tmp_path):
    _fill(str(tmp_path / "s"))
    server = OurServer(tmp_path / "s", tmp_path / "s.log")
    server.service = None
    server.start()
    try:
        port = server.port
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /list%s?details=1 HTTP/1.1\r\nHost: x\r\n\r\n" % FOLDER.encode())
                assert s.recv(200).startswith(b"HTTP/1.1 200 ")
        time.sleep(1.0)   # the server meets the closed connection at its next flush
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:   # still serving
            s.sendall(b"GET /version/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(200).startswith(b"HTTP/1.1 200 ")
    finally:
        server.stop()
    log = open(tmp_path / "s.log").read()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
