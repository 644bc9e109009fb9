"""Clock skew between two sites assigning versions (one gateway and its writer under libfaketime).

Versions are the writers' clocks (the client sends ``int(time.time())`` when a
name has no version), so a site whose clock runs 30 s ahead writes versions 30 s
in the future.  Site A (gateway + client under ``faketime -f +30s``) and site B
(true clock) write and delete the same names.  Last-writer-wins *by version*
stays consistent: every replica holds the same record, both gateways serve the
same bytes.  What users see, pinned below:

* B's later (in real time) write of a name A wrote is acknowledged, but the
  client is told the version that stays (A's, 30 s ahead) and reads give A's bytes;
* B's delete of such a name does not delete it (a tombstone older than the data);
* a listing through B's gateway (default ``last_modified`` = its now) omits names
  whose version is still in its future; A's gateway lists them.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import requests

from tests.cluster.test_e2e_support import version_of
from tests.faults.conftest import figures
from tests.support.procs import ROOT, Service, free_port, script
from tests.support.waiting import wait_until

pytestmark = pytest.mark.faults

SKEW = 30
WRITER = textwrap.dedent("""
    import sys
    from filetracker.client.remote_data_store import RemoteDataStore
    op, url, name = sys.argv[1:4]
    store = RemoteDataStore(url)
    if op == "put":
        print(store.add_file(name, sys.argv[4]))
    else:
        store.delete_file(name)
        print("deleted")
""")


def _replica_records(c, name, timeout=15):
    """The set of the 3 replicas' records of ``name``, once they agree (or as last seen): with
    W=2 a write is acknowledged while the third replica may still be on its way."""
    seen = {}

    def agreed():
        seen["records"] = {c.record(i, name) for i in range(3)}
        return len(seen["records"]) == 1

    wait_until(agreed, timeout=timeout)
    return seen["records"]


def test_clock_skew_last_writer_wins_by_version(cluster_factory, tmp_path):
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.skip("faketime (libfaketime) is not installed: run scripts/setup.sh as root")
    c = cluster_factory(3, gateway=True)
    gw_b = c.gateway_url
    port = free_port()
    gw_a = "http://127.0.0.1:%d" % port
    argv = [faketime, "-f", "+%ds" % SKEW, script("filetracker-gateway"), "--port", str(port),
            "--nodes", ",".join(c.urls), "--log-level", "WARNING", "--cluster-secret-file", c.secret_file]
    gw_a_svc = Service(argv, str(tmp_path / "gateway-a.log"), ready_url=gw_a + "/version/").start()
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    env = dict(os.environ, PYTHONPATH=ROOT)

    def run(site, op, name, data=b""):
        path = tmp_path / "payload"
        path.write_bytes(data)
        cmd = [sys.executable, str(writer), op, gw_a if site == "A" else gw_b, name, str(path)]
        if site == "A":
            cmd = [faketime, "-f", "+%ds" % SKEW] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    try:
        # 1. A (ahead) writes, then B writes the same name later in real time
        va = int(run("A", "put", "/skew/doc", b"from A").rsplit("@", 1)[1])
        vb_told = int(run("B", "put", "/skew/doc", b"from B").rsplit("@", 1)[1])
        assert vb_told == va            # B is told the version that stays: A's
        # 2. B writes first, then A: A's version is higher anyway, A wins
        run("B", "put", "/skew/two", b"B first")
        v2 = int(run("A", "put", "/skew/two", b"A second").rsplit("@", 1)[1])
        # 3. B deletes the doc A wrote: the tombstone is older than the data
        run("B", "delete", "/skew/doc")
        expect = {"/skew/doc": (va, b"from A"), "/skew/two": (v2, b"A second")}
        reads = 0
        for name, (v, data) in expect.items():
            for gw in (gw_a, gw_b):
                r = requests.get(gw + "/files" + name, timeout=10)
                reads += 1
                assert r.status_code == 200 and r.content == data and version_of(r) == v, (gw, name)
            # every replica holds the same winner: with W=2 the third may still be on its way
            records = _replica_records(c, name)
            assert len(records) == 1, records          # every replica holds the same winner
            assert next(iter(records)).version == v
        # 4. listings: B's gateway (true clock) does not list names whose version is in its future
        list_a = requests.get(gw_a + "/list/skew", timeout=10).text.split()
        list_b = requests.get(gw_b + "/list/skew", timeout=10).text.split()
        assert list_a == ["doc", "two"] and list_b == [], (list_a, list_b)
        print("\nclock skew +%ds: B's later write and delete of A's name were acknowledged but lost to "
              "A's future version; every replica agrees; B's gateway lists %s, A's lists %s"
              % (SKEW, list_b, list_a))
        figures("clock skew (faketime)", cases=5 + reads, faults=1, acked_checked=len(expect))
    finally:
        gw_a_svc.stop()
