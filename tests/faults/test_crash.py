"""kill -9 at random points during writes, deletes, anti-entropy and admin moves.

A 3-node cluster (a 4th node waiting outside the ring) takes a random mix of
PUTs (new names and overwrites) and DELETEs through a gateway, while a killer
``kill -9``s a random member (or the admin process moving data) at random
moments and restarts it; half-way the admin adds the 4th node and rebalances
under the same fire.  At the end, with the writers still writing, every member
is ``kill -9``ed at once.

The crash property is checked *directly*, on the store as the crash left it:
right after each ``kill -9`` of a node, while it is down (so before its restart,
before any anti-entropy, handoff, read repair or startup cleanup can touch it),
its store is opened offline (:func:`check_store_offline`): every live record's
blob exists with the recorded size and SHA-256, no record's blob is a file of
``tmp/``, the records database passes ``quick_check``.  Bad records: must be 0.

Afterwards, with everything up and settled (end to end):

* ``filetracker-admin verify`` finds no record pointing to a missing or
  partial blob (each node hashes every blob its records name) and no replica
  difference, and no node has a leftover temp file;
* every acknowledged write is present: the name reads back at the acked
  version with the acked bytes, or at a newer version some writer attempted;
  an acknowledged delete reads 404 unless a newer attempted write exists.
"""

import collections
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from filetracker.storage import ObjectStore
from tests.cluster.test_admin_support import admin, admin_background, start_gateway
from tests.cluster.test_e2e_support import version_of
from tests.faults.conftest import (
    NodeCluster,
    check_store_offline,
    figures,
    flip_byte,
    gw_put,
    tmp_files,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

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
            stop.wait(0.02)   # a refused client backs off a little (no spinning on instant 503s while all are down)


def _date(v):
    from tests.cluster.test_e2e_support import http_date
    return http_date(v)


class CrashChecks:
    """Offline checks of killed nodes' stores (:func:`check_store_offline`), with totals."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.stores = 0          # stores checked (one per node kill -9)
        self.records = 0         # live records checked against their blobs
        self.tombstones = 0
        self.tmp_files = 0       # temp files the crashes left (allowed: no record points at them)
        self.bad = []            # (node, name, why): must stay empty
        self.per_kill = []       # "n<node>:<records checked>" per check, in order

    def check(self, i):
        """Check node ``i``'s store now; it must have just been killed (no process has it open)."""
        assert not self.cluster.services[i].alive()
        found = check_store_offline(self.cluster.dirs[i])
        self.stores += 1
        self.records += found["checked"]
        self.tombstones += found["tombstones"]
        self.tmp_files += found["tmp_files"]
        self.bad += [(i, name, why) for name, why in found["bad"]]
        self.per_kill.append("n%d:%d" % (i, found["checked"]))


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
        kills = {"node": 0, "admin": 0, "all": 0}
        crash = CrashChecks(c)
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
                down = time.monotonic() + rnd.uniform(0.1, 0.5)
                crash.check(i)                     # the store as the crash left it, before any healing
                time.sleep(max(0.0, down - time.monotonic()))
                c.start_node(i)
        time.sleep(1.0)
        # every member dies at once, mid-write: nobody is left to heal anyone
        for i in members:
            c.kill9(i)
            kills["all"] += 1
        for i in members:
            crash.check(i)
        with ThreadPoolExecutor(len(members)) as pool:     # restart together (each waits until ready)
            list(pool.map(c.start_node, members))
        time.sleep(0.5)
        stop.set()
        for t in writers:
            t.join(60)
        if mover is not None:
            mover.proc.wait(120)
        load_s = time.monotonic() - t0
        print("\nimmediate checks (store offline right after each kill -9, before restart): %d node kills "
              "checked, %d live records checked against their blobs (+%d tombstones), %d temp files left "
              "by the crashes, %d bad records: %s\n  records checked per kill (node:records): %s"
              % (crash.stores, crash.records, crash.tombstones, crash.tmp_files, len(crash.bad), crash.bad[:10],
                 " ".join(crash.per_kill)))
        assert not crash.bad, crash.bad[:10]          # before any healing: checked as the crash left it
        # settle: a final rebalance with nobody killed, then verify (anti-entropy runs every second)
        assert admin(c, "rebalance", url=c.urls[0]).returncode == 0

        # Retried only until the replicas converge: a blob problem in ANY attempt fails the test.
        runs = []

        def verified():
            p = admin(c, "verify", url=c.urls[0])
            blobs = [tuple(map(int, m)) for m in re.findall(r"(\d+) missing, (\d+) corrupt", p.stdout)]
            runs.append((p.returncode, sum(a + b for a, b in blobs), len(blobs)))
            return p.returncode == 0
        assert wait_until(verified, 60, interval=2), c.logs()
        print("admin verify after settling: %d run(s); blob problems reported: %d; nodes per run: %s"
              % (len(runs), sum(r[1] for r in runs), [r[2] for r in runs]))
        assert sum(r[1] for r in runs) == 0, runs
        assert runs[-1][2] == 4, runs                  # the passing run checked every node's blobs
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
              "%d node kill -9 + %d at once at the end, %d admin kill -9"
              % (load_s, ledger.counts["put"], ledger.counts["delete"], ledger.counts["acked"],
                 ledger.counts["failed"], kills["node"], kills["all"], kills["admin"]))
        print("not acknowledged (allowed; a delete of a deleted name is a 404): %s; e.g. %s"
              % (dict(ledger.failures), ledger.samples[:3]))
        figures("kill -9 (writes/deletes/moves)", cases=ledger.counts["put"] + ledger.counts["delete"],
                faults=kills["node"] + kills["all"] + kills["admin"], acked_checked=checked, lost=len(lost))
        assert crash.stores == kills["node"] + kills["all"] == 6 + 4
        assert crash.records > 0
        assert not lost, lost[:10]
        assert kills["node"] == 6
    finally:
        for g in gateways:
            g.stop()
        c.stop()


def test_offline_check_finds_what_a_bad_crash_would_leave(tmp_path):
    """The offline check is not vacuous: it names a missing, a truncated, a flipped and a tmp/ blob."""
    names = ["/ok", "/missing", "/partial", "/flipped", "/intmp", "/gone"]
    with ObjectStore(str(tmp_path)) as store:
        for k, name in enumerate(names):
            up = store.begin_upload()
            up.write(content(name, BASE + k))
            store.commit_upload(up, name, BASE + k)
        store.delete("/gone", BASE + 100)
        paths = {n: store.blob_path(store.get_record(n).sha256) for n in names[:5]}
    os.unlink(paths["/missing"])
    with open(paths["/partial"], "r+b") as f:
        f.truncate(5)
    flip_byte(paths["/flipped"])
    os.link(paths["/intmp"], os.path.join(str(tmp_path), "tmp", "upload-in-progress"))
    found = check_store_offline(str(tmp_path))
    assert found["checked"] == 5 and found["tombstones"] == 1 and found["tmp_files"] == 1
    assert sorted(found["bad"]) == [("/flipped", "blob partial/corrupt"), ("/intmp", "blob is a temp file of tmp/"),
                                    ("/missing", "blob missing"), ("/partial", "blob partial/corrupt")]
