"""kill -9 at random points during writes, deletes, anti-entropy and admin moves.

A 3-node cluster (a 4th node waiting outside the ring) takes a random mix of
PUTs (new names and overwrites) and DELETEs through a gateway, while a killer
``kill -9``s a random member (or the admin process moving data) at random
moments and restarts it; half-way the admin adds the 4th node and rebalances
under the same fire.  Afterwards, with everything up and settled:

* ``filetracker-admin verify`` finds no record pointing to a missing or
  partial blob (each node hashes every blob its records name) and no replica
  difference, and no node has a leftover temp file;
* every acknowledged write is present: the name reads back at the acked
  version with the acked bytes, or at a newer version some writer attempted;
  an acknowledged delete reads 404 unless a newer attempted write exists.
"""

import collections
import random
import threading
import time

import pytest
import requests

from tests.cluster.test_admin_support import admin, admin_background, start_gateway
from tests.cluster.test_e2e_support import version_of
from tests.faults.conftest import NodeCluster, figures, gw_put, tmp_files, wait_until

pytestmark = pytest.mark.faults

BASE = 1795550400
NAMES = 300
WRITERS = 4


class Ledger:
    """Every attempted op per name and the last acknowledged one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.version = BASE
        self.attempted = {}     # name -> {version: bytes or None (delete)}
        self.acked = {}         # name -> (version, bytes or None)
        self.counts = {"put": 0, "delete": 0, "acked": 0, "failed": 0}
        self.failures = collections.Counter()   # (op, status) of the ops not acknowledged
        self.samples = []                       # a few reasons of refused PUTs

    def next_version(self, name, data):
        with self.lock:
            self.version += 1
            self.attempted.setdefault(name, {})[self.version] = data
            return self.version

    def ack(self, name, version, data):
        with self.lock:
            self.counts["acked"] += 1
            if version > self.acked.get(name, (0, None))[0]:
                self.acked[name] = (version, data)


def content(name, version):
    return (("%s@%d|" % (name, version)).encode()) * (1 + version % 400)


def _writer(gw, ledger, stop, seed):
    rnd = random.Random(seed)
    s = requests.Session()
    while not stop.is_set():
        name = "/crash/f%03d" % rnd.randrange(NAMES)
        delete = rnd.random() < 0.2 and name in ledger.acked
        try:
            if delete:
                v = ledger.next_version(name, None)
                ledger.counts["delete"] += 1
                r = s.delete(gw + "/files" + name, params={"last_modified": _date(v)}, timeout=30)
                ok = r.status_code == 200
                what = ("delete", r.status_code)
            else:
                v = ledger.next_version(name, None)
                data = content(name, v)
                with ledger.lock:
                    ledger.attempted[name][v] = data
                ledger.counts["put"] += 1
                r = gw_put(gw, name, data, v, session=s)
                ok = r.status_code == 200
                what = ("put", r.status_code)
                if not ok and len(ledger.samples) < 5:
                    ledger.samples.append(r.headers.get("X-Exception"))
        except requests.RequestException as e:
            ok, what = False, ("delete" if delete else "put", type(e).__name__)
        if ok:
            ledger.ack(name, v, None if delete else data)
        else:
            ledger.counts["failed"] += 1
            with ledger.lock:
                ledger.failures[what] += 1


def _date(v):
    from tests.cluster.test_e2e_support import http_date
    return http_date(v)


def test_kill9_during_writes_deletes_and_moves(tmp_path):
    rnd = random.Random(1234)
    c = NodeCluster(tmp_path, nodes=4, members=3, sync_interval=1)
    gateways = []
    try:
        for i in range(3):
            c.start_node(i)
        gw_svc, gw = start_gateway(c, c.urls[:3], "gw")
        gateways.append(gw_svc)
        ledger = Ledger()
        stop = threading.Event()
        writers = [threading.Thread(target=_writer, args=(gw, ledger, stop, k), daemon=True)
                   for k in range(WRITERS)]
        for t in writers:
            t.start()
        kills = {"node": 0, "admin": 0}
        members = [0, 1, 2]
        t0 = time.monotonic()
        mover = None
        # a fixed plan (count-bound, so a loaded machine does not change what is tested), random timing
        plan = ["node", "node", "add", "admin", "node", "node", "node", "node"]
        for step in plan:
            time.sleep(rnd.uniform(0.2, 0.7))
            if step == "add":                      # the admin adds node 3 and starts moving data
                c.start_node(3)
                assert admin(c, "add-node", c.urls[3], url=",".join(c.urls[:3])).returncode == 0
                members.append(3)
                mover = admin_background(c, "rebalance", "--down-timeout", "60", log_name="admin-move.log")
            elif step == "admin":                  # the admin dies mid-move, and is run again
                if mover.alive():
                    mover.kill9()
                    kills["admin"] += 1
                mover = admin_background(c, "rebalance", "--down-timeout", "60", log_name="admin-move.log")
            else:                                  # a node dies mid-write / mid-delete / mid-sync / mid-move
                i = rnd.choice(members)
                c.kill9(i)
                kills["node"] += 1
                time.sleep(rnd.uniform(0.1, 0.5))
                c.start_node(i)
        time.sleep(1.0)
        stop.set()
        for t in writers:
            t.join(60)
        if mover is not None:
            mover.proc.wait(120)
        load_s = time.monotonic() - t0
        # settle: a final rebalance with nobody killed, then verify (anti-entropy runs every second)
        assert admin(c, "rebalance", url=c.urls[0]).returncode == 0

        def verified():
            return admin(c, "verify", url=c.urls[0]).returncode == 0
        assert wait_until(verified, 60, interval=2), c.logs()
        for i in range(4):
            assert tmp_files(c, i) == [], (i, tmp_files(c, i))
        # every acknowledged op is visible (or superseded by a newer attempted write)
        lost = []
        checked = 0
        s = requests.Session()
        for name, (v, data) in sorted(ledger.acked.items()):
            r = s.get(gw + "/files" + name, timeout=30)
            checked += 1
            newer = {ver: d for ver, d in ledger.attempted[name].items() if ver > v}
            if r.status_code == 200:
                got = version_of(r)
                want = data if got == v else newer.get(got)
                if got < v or want is None or r.content != want:
                    lost.append((name, v, got, data is None))
            elif r.status_code == 404:
                if data is not None and not any(d is None for d in newer.values()):
                    lost.append((name, v, "404", False))
            else:
                lost.append((name, v, r.status_code, data is None))
        print("\ncrash: %.1f s of load, %d puts + %d deletes attempted, %d acked, %d failed; "
              "%d node kill -9, %d admin kill -9" % (load_s, ledger.counts["put"], ledger.counts["delete"],
                                                      ledger.counts["acked"], ledger.counts["failed"],
                                                      kills["node"], kills["admin"]))
        print("not acknowledged (allowed; a delete of a deleted name is a 404): %s; e.g. %s"
              % (dict(ledger.failures), ledger.samples[:3]))
        figures("kill -9 (writes/deletes/moves)", cases=ledger.counts["put"] + ledger.counts["delete"],
                faults=kills["node"] + kills["admin"], acked_checked=checked, lost=len(lost))
        assert not lost, lost[:10]
        assert kills["node"] == 6
    finally:
        for g in gateways:
            g.stop()
        c.stop()
