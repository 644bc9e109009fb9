"""Fixtures of the fault suite (``pytest -m faults``).

The cluster launcher is the one of ``tests/cluster`` (:class:`NodeCluster`,
``cluster_factory``), imported here so the fixtures apply to this folder.
Every fault test reports what it tried with :func:`figures`
(:mod:`tests.support.figures`; the totals are printed at the end of the run).
"""

import hashlib
import os
import stat
import types

import pytest
import requests

from cluster.ring import Ring
from filetracker.storage import ObjectStore
from tests.cluster.conftest import SECRET, NodeCluster, cluster_factory, wait_until  # noqa: F401
from tests.support.figures import figures  # noqa: F401 - used by the fault tests


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def blob_path(cluster, i, sha):
    return os.path.join(cluster.dirs[i], "blobs", sha[:2], sha)


def flip_byte(path, offset=None, keep_mtime=False):
    """Flip one byte of a stored file in place (bitrot); ``keep_mtime`` restores the mtime (silent rot)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        pos = st.st_size // 2 if offset is None else offset
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))
        f.flush()
        os.fsync(f.fileno())
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def gw_put(gw, name, data, version, session=None):
    from tests.cluster.test_e2e_support import http_date
    return (session or requests).put(gw + "/files" + name, params={"last_modified": http_date(version)},
                                     data=data, timeout=30)


def tmp_files(cluster, i):
    d = os.path.join(cluster.dirs[i], "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def check_store_offline(path):
    """Check a *stopped* node's store exactly as a crash left it; return the findings.

    Call only while no process has the store open (after ``kill -9``, before the
    restart), so no anti-entropy, handoff, read repair or startup cleanup has run.
    The store is opened with ``clear_tmp=False`` (tmp/ stays as the crash left it)
    and :meth:`ObjectStore.verify` runs without repair: every live record's blob
    must exist with the recorded size and SHA-256.  Also checked: no live record's
    blob is a file of tmp/ (same inode, or a tmp/ name equal to its hash), every
    blob is a regular file, and SQLite's ``quick_check`` passes.

    Returns ``{"checked", "tombstones", "tmp_files", "bad": [(name, why), ...]}``;
    ``bad`` must be empty.
    """
    import sqlite3

    tmp_dir = os.path.join(path, "tmp")
    tmp = {}
    for n in (os.listdir(tmp_dir) if os.path.isdir(tmp_dir) else []):
        try:
            st = os.lstat(os.path.join(tmp_dir, n))
        except FileNotFoundError:
            continue
        tmp[(st.st_dev, st.st_ino)] = n
    tmp_names = set(tmp.values())
    store = ObjectStore(path, clear_tmp=False)
    try:
        report = store.verify(repair=False)
        bad = [(n, "blob missing") for n in report.missing] + [(n, "blob partial/corrupt") for n in report.corrupt]
        tombstones = 0
        for r in store.iter_records():
            if r.deleted:
                tombstones += 1
                continue
            try:
                st = os.lstat(store.blob_path(r.sha256))
            except FileNotFoundError:
                continue                     # already counted as missing by verify()
            if not stat.S_ISREG(st.st_mode):
                bad.append((r.name, "blob is not a regular file"))
            if (st.st_dev, st.st_ino) in tmp or r.sha256 in tmp_names:
                bad.append((r.name, "blob is a temp file of tmp/"))
        db = sqlite3.connect(store.db_path, timeout=60)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
        if check != "ok":
            bad.append(("<records.sqlite3>", "quick_check: %s" % check))
    finally:
        store.close()
    return {"checked": report.checked, "tombstones": tombstones, "tmp_files": len(tmp), "bad": bad}


@pytest.fixture
def node(tmp_path):
    """A stand-in for NodeState over a real ObjectStore in ``tmp_path`` (one member, one partition),
    for in-process tests of the node's integrity pieces."""
    store = ObjectStore(str(tmp_path))
    ring = Ring.initial(["http://me"], replicas=1)
    n = types.SimpleNamespace(config=types.SimpleNamespace(dir=str(tmp_path)), store=store, id="http://me",
                              ring=ring, partition_of=lambda name: 0)
    yield n
    store.close()


def store_put(store, name, data, version=1):
    """Store ``data`` as ``name@version`` straight into ``store``; its sha256."""
    up = store.begin_upload()
    up.write(data)
    store.commit_upload(up, name, version)
    return sha256(data)
