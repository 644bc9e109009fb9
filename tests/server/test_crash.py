"""Acceptance 5: kill -9 during 200 concurrent uploads; acknowledged uploads survive.

16 threads upload 200 distinct files; once a third of them are acknowledged the
server gets SIGKILL.  After a restart every acknowledged file reads back with
its SHA-256, every other name is either absent or complete (never partial),
tmp/ is empty and ``ObjectStore.verify()`` finds nothing wrong.
"""

import email.utils
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from filetracker.storage import ObjectStore
from tests.server.conftest import ServerProc

T0 = 1_732_400_000
COUNT = 200
KILL_AFTER = 70


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill9_during_concurrent_uploads(tmp_path):
    srv = ServerProc(tmp_path / "data", tmp_path / "server.log").start()
    payloads = {"/crash/%03d" % i: os.urandom(16_384 + 997 * i) for i in range(COUNT)}
    acked = {}
    lock = threading.Lock()
    killed = threading.Event()
    session_local = threading.local()

    def upload(name):
        if killed.is_set():
            return
        s = getattr(session_local, "s", None) or requests.Session()
        session_local.s = s
        data = payloads[name]
        try:
            r = s.put(srv.url + "/files" + name, data=data,
                      params={"last_modified": email.utils.formatdate(T0)},
                      headers={"SHA256-Checksum": hashlib.sha256(data).hexdigest()}, timeout=10)
        except requests.RequestException:
            return
        if r.status_code == 200:
            with lock:
                acked[name] = hashlib.sha256(data).hexdigest()
                if len(acked) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    srv.service.kill9()

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(upload, payloads))
        assert killed.is_set(), "all uploads finished before the kill"
        assert len(acked) >= KILL_AFTER

        srv.start()
        assert srv.tmp_files() == []
        complete = absent = 0
        for name, data in payloads.items():
            r = requests.get(srv.url + "/files" + name, timeout=10)
            if name in acked:
                assert r.status_code == 200, name
                assert hashlib.sha256(r.content).hexdigest() == acked[name], name
            elif r.status_code == 200:
                # Not acknowledged but stored: must be the whole file.
                assert r.content == data, name
                complete += 1
            else:
                assert r.status_code == 404
                absent += 1
        listed = requests.get(srv.url + "/list/crash", timeout=10).text.splitlines()
        assert set("/crash/" + n for n in listed) >= set(acked)
    finally:
        srv.stop()
    store = ObjectStore(srv.dir, clear_tmp=False)
    try:
        report = store.verify()
        assert report.ok, report
        assert report.checked >= len(acked)
        garbage = store.collect_garbage()  # orphans from the crash are allowed, and collected
    finally:
        store.close()
    print("acked=%d, unacked-but-complete=%d, absent=%d, orphan blobs collected=%d"
          % (len(acked), complete, absent, garbage[0]))
