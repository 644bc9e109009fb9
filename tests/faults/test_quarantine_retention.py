"""Retention of a node's ``quarantine/`` folder (cluster/node/integrity.py), in process on a real
ObjectStore: a repaired blob's quarantined copy goes after ``quarantine_keep`` seconds, an
unrepaired one stays; the byte cap drops the oldest repaired copies only; the options parse."""

import os
import time
import types

import pytest

from cluster.node.integrity import REPAIRED, Integrity
from cluster.node.main import build_parser, config_from_args
from filetracker import configfile
from tests.faults.conftest import flip_byte
from tests.faults.conftest import store_put as put

pytestmark = pytest.mark.faults


def corrupt(integ, store, name, data):
    """Store ``data`` as ``name``, rot it, let a read quarantine it; its sha256."""
    sha = put(store, name, data)
    flip_byte(store.blob_path(sha))
    with store.open_blob(sha) as f:
        with pytest.raises(Exception, match="checksum mismatch"):
            integ.check(sha, f, name=name)
    assert not store.has_blob(sha)
    return sha


def quarantined(integ):
    return sorted(os.listdir(integ.quarantine_dir))


def test_repaired_copy_removed_after_keep_unrepaired_kept(node):
    integ = Integrity(node, quarantine_keep=0.5)
    fixed = corrupt(integ, node.store, "/fixed", b"f" * 50_000)
    lost = corrupt(integ, node.store, "/lost", b"l" * 70_000)
    assert integ.summary()["quarantine_files"] == 2
    assert integ.summary()["quarantine_bytes"] == 120_000
    put(node.store, "/fixed-again", b"f" * 50_000)        # the good bytes come back
    repaired_at = time.time()  # the clock is passed in below: a pause here cannot change the result
    assert integ.repair_pending() == {"repaired": 1, "failed": 1, "pending": 1}
    names = quarantined(integ)
    assert [n.split(".")[0] for n in names] == sorted([fixed, lost])
    assert [n for n in names if n.endswith(REPAIRED)] == [n for n in names if n.startswith(fixed)]
    assert integ.prune_quarantine(now=repaired_at + 0.1) == 0   # within the keep time: both kept
    assert len(quarantined(integ)) == 2
    assert integ.prune_quarantine(now=time.time() + 1) == 1    # the repaired copy's time is up
    assert [n.split(".")[0] for n in quarantined(integ)] == [lost]
    assert integ.prune_quarantine(now=time.time() + 10 ** 9) == 0   # unrepaired: kept for ever
    s = integ.summary()
    assert (s["quarantine_files"], s["quarantine_bytes"], s["quarantine_removed"]) == (1, 70_000, 1)
    # a restart does not requeue a repair of what was repaired, only of what was not
    assert Integrity(node).requeue_quarantined() == 1


def test_keep_zero_and_repair_before_restart(node):
    integ = Integrity(node, quarantine_keep=0)
    sha = corrupt(integ, node.store, "/a", b"a" * 10_000)
    put(node.store, "/b", b"a" * 10_000)                  # repaired, but this node "restarts" first
    again = Integrity(node, quarantine_keep=0)
    assert again.requeue_quarantined() == 0
    assert again.prune_quarantine() == 1                  # present and not pending: marked, then gone
    assert quarantined(again) == [] and node.store.has_blob(sha)


def test_byte_cap_drops_oldest_repaired_only(node):
    integ = Integrity(node, quarantine_keep=10 ** 6, quarantine_max_bytes=25_000)
    shas = [corrupt(integ, node.store, "/%d" % i, bytes([65 + i]) * 10_000) for i in range(3)]
    unrepaired = corrupt(integ, node.store, "/u", b"u" * 10_000)
    for i, sha in enumerate(shas):                        # repaired in order 0, 1, 2
        put(node.store, "/good%d" % i, bytes([65 + i]) * 10_000)
        assert integ.repair_one(sha) is True
        path = next(os.path.join(integ.quarantine_dir, n) for n in quarantined(integ) if n.startswith(sha))
        t = time.time() - 100 + i
        os.utime(path, (t, t))                            # distinct repair times, oldest first
    assert integ.prune_quarantine() == 2                  # 40 000 bytes > 25 000: the two oldest go
    assert sorted(n.split(".")[0] for n in quarantined(integ)) == sorted([shas[2], unrepaired])
    integ.quarantine_max_bytes = 1
    assert integ.prune_quarantine() == 1                  # still above: only repaired copies go
    assert [n.split(".")[0] for n in quarantined(integ)] == [unrepaired]


def test_a_repair_without_room_for_its_temporary_file_stays_queued(node, monkeypatch):
    """No temporary file for the fetched copy (the reserve, a full disk, no descriptors left):
    the repair fails and stays queued for the next pass; no exception escapes the pass."""
    from filetracker.storage import StoreFull

    integ = Integrity(node, client=types.SimpleNamespace(fetch_blob=None))   # never reached
    sha = corrupt(integ, node.store, "/full", b"x" * 10_000)
    monkeypatch.setattr(integ, "_sources", lambda name: ["http://peer"])

    def full():
        raise StoreFull("no space left on the node's disk")

    monkeypatch.setattr(node.store, "begin_upload", full)
    assert integ.repair_pending() == {"repaired": 0, "failed": 1, "pending": 1}
    assert not node.store.has_blob(sha)


def test_options(tmp_path):
    parser = build_parser()
    base = ["--dir", str(tmp_path), "--port", "9"]
    cfg = config_from_args(parser, parser.parse_args(base))
    assert (cfg.quarantine_keep, cfg.quarantine_max_bytes) == (7 * 24 * 3600.0, 0)
    cfg = config_from_args(parser, parser.parse_args(base + ["--quarantine-keep", "0",
                                                             "--quarantine-max-bytes", "1G"]))
    assert (cfg.quarantine_keep, cfg.quarantine_max_bytes) == (0.0, 1 << 30)
    conf = tmp_path / "node.toml"
    conf.write_text('quarantine-keep = 60\nquarantine-max-bytes = "2M"\n')
    parser = build_parser()
    args = configfile.parse_args(parser, ["--config", str(conf)] + base)
    cfg = config_from_args(parser, args)
    assert (cfg.quarantine_keep, cfg.quarantine_max_bytes) == (60.0, 2 << 20)
