"""ObjectStore's group commit: concurrent commits give the same results as one at a time."""

import hashlib
import os
import threading

from filetracker.records import Record
from filetracker.storage import ObjectStore


def _commit(store, name, version, data):
    up = store.begin_upload()
    up.write(data)
    return store.commit_upload(up, name, version)


def test_concurrent_commits_merge_like_sequential_ones(tmp_path):
    store = ObjectStore(str(tmp_path / "s"))
    results = {}
    barrier = threading.Barrier(16)

    def worker(i):
        barrier.wait()
        # 8 distinct names, and 8 versions of one shared name
        if i < 8:
            results[i] = _commit(store, "/own/%d" % i, 10, b"own %d" % i)
        else:
            results[i] = _commit(store, "/shared", 100 + i, b"shared %d" % i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(8):
        winner, applied = results[i]
        assert applied and winner.version == 10
        assert store.get_record("/own/%d" % i).sha256 == hashlib.sha256(b"own %d" % i).hexdigest()
    final = store.get_record("/shared")
    assert final.version == 115 and final.sha256 == hashlib.sha256(b"shared 15").hexdigest()
    for i in range(8, 16):
        winner, applied = results[i]
        # an applied version was the newest when it was committed; a refused one lost to a newer one
        assert winner.version >= 100 + i
        assert applied == (winner.version == 100 + i)
    # superseded versions of /shared left no blob behind
    blobs = {p.name for p in (tmp_path / "s" / "blobs").rglob("*") if p.is_file()}
    assert blobs == {store.get_record(n).sha256 for n in ["/shared"] + ["/own/%d" % i for i in range(8)]}
    store.close()


def test_a_losing_record_and_a_missing_blob_fail_alone(tmp_path):
    store = ObjectStore(str(tmp_path / "s"))
    assert _commit(store, "/a", 5, b"five")[1]
    assert _commit(store, "/a", 4, b"four") == (store.get_record("/a"), False)
    missing = Record(name="/b", version=1, sha256="0" * 64, size=3, deleted=False)
    try:
        store.apply_record(missing)
    except Exception as e:  # noqa: BLE001
        assert type(e).__name__ == "BlobMissing"
    else:
        raise AssertionError("BlobMissing expected")
    assert store.get_record("/b") is None
    assert _commit(store, "/b", 2, b"two")[1]
    store.close()


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def test_commit_uploads_one_result_per_item_and_no_file_left(tmp_path):
    """Many uploads in one call: each item gets its own result (a failure never fails the
    others), the winners are stored, the merge rule holds inside the batch, no temp file stays."""
    store = ObjectStore(str(tmp_path / "s"))
    store.commit_upload(_upload(store, b"newer"), "/kept", 50)
    items = [
        (_upload(store, b"a"), Record("/a", 10, _sha(b"a"), 1)),
        (_upload(store, b"b"), Record("/b", 10, _sha(b"not b"), 1)),      # checksum mismatch
        (_upload(store, b"cc"), Record("/c", 10, _sha(b"cc"), 3)),        # size mismatch
        (_upload(store, b"old"), Record("/kept", 40, _sha(b"old"), 3)),   # loses to version 50
        (_upload(store, b"d1"), Record("/d", 10, _sha(b"d1"), 2)),
        (_upload(store, b"d2"), Record("/d", 11, _sha(b"d2"), 2)),        # the later version wins
        (_upload(store, b"a"), Record("/a-copy", 10, _sha(b"a"), 1)),     # same content, one blob
    ]
    results = store.commit_uploads(items)
    assert [type(r).__name__ if isinstance(r, Exception) else r[1] for r in results] == \
        [True, "ChecksumMismatch", "SizeMismatch", False, True, True, True]
    assert results[3][0].version == 50
    assert store.get_record("/a").sha256 == _sha(b"a") and store.get_record("/a-copy").sha256 == _sha(b"a")
    assert store.get_record("/b") is None and store.get_record("/c") is None
    assert store.get_record("/kept").sha256 == _sha(b"newer")
    assert store.get_record("/d").version == 11 and store.get_record("/d").sha256 == _sha(b"d2")
    assert os.listdir(store.tmp_dir) == []
    with store.open_blob(_sha(b"a")) as f:
        assert f.read() == b"a"
    assert not store.has_blob(_sha(b"d1"))  # lost inside the batch: never placed, or dropped
    assert store.commit_uploads([]) == []


def _upload(store, data):
    up = store.begin_upload()
    up.write(data)
    return up


def test_a_partition_list_answer_stops_after_the_partition_reaching_the_limit(tmp_path):
    """``POST /_cluster/partitions`` answers whole partitions, in the order asked, up to the one
    that brings the record count to the limit (at least one): the asker asks again for the rest."""
    import msgpack

    from cluster.node.internal import list_partitions

    store = ObjectStore(str(tmp_path / "s"), partition_of=lambda name: int(name.split("/")[1]))
    for p, n in [(1, 2), (2, 1), (3, 3), (4, 1)]:
        for i in range(n):
            store.commit_upload(_upload(store, b"%d-%d" % (p, i)), "/%d/f%d" % (p, i), 10)
    listed = lambda parts, limit: {p: [d["name"] for d in rs]  # noqa: E731
                                   for p, rs in msgpack.unpackb(list_partitions(store, parts, limit),
                                                                strict_map_key=False).items()}
    assert listed([1, 2, 3, 4], 3) == {1: ["/1/f0", "/1/f1"], 2: ["/2/f0"]}
    assert listed([3, 4, 9], 2) == {3: ["/3/f0", "/3/f1", "/3/f2"]}           # one alone, even larger
    assert listed([9, 4, 4], 10) == {9: [], 4: ["/4/f0"]}                      # empty ones count nothing
    assert store.count_records(3) == 3 and store.count_records(9) == 0


def test_a_commit_failing_outright_ends_every_job_of_its_batch(tmp_path):
    """When a whole group commit fails (the database, not one record), every job queued in it
    gets the error: callers waiting on those jobs must never wait for ever."""
    import sqlite3

    from filetracker.storage import StorageError

    store = ObjectStore(str(tmp_path / "s"))
    real, calls = store._commit_batch, []

    def broken_once(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return real(batch)

    store._commit_batch = broken_once
    results = store.commit_uploads([(_upload(store, b"x"), Record("/x", 10, _sha(b"x"), 1)),
                                    (_upload(store, b"y"), Record("/y", 10, _sha(b"y"), 1))])
    assert calls == [2] and all(isinstance(r, StorageError) and "disk I/O error" in str(r) for r in results)
    assert store.get_record("/x") is None and os.listdir(store.tmp_dir) == []
    assert store.commit_upload(_upload(store, b"x"), "/x", 10)[1]   # the next commit works


def test_a_record_losing_inside_a_failed_commit_is_not_answered_as_superseded(tmp_path):
    """Two versions of one name in one group commit, the commit fails: the older one lost to
    a record that was never stored, so it must fail too, not be told "a newer version is
    stored" (a node would have counted that answer toward the write quorum)."""
    import sqlite3

    from filetracker.storage import StorageError

    store = ObjectStore(str(tmp_path / "s"))
    store.commit_upload(_upload(store, b"one"), "/kept", 1)
    real = store._transaction

    def failing():
        raise sqlite3.OperationalError("database or disk is full")

    store._transaction = failing
    results = store.commit_uploads([(_upload(store, b"new"), Record("/x", 10, _sha(b"new"), 3)),
                                    (_upload(store, b"old"), Record("/x", 5, _sha(b"old"), 3)),
                                    (_upload(store, b"older"), Record("/kept", 0, _sha(b"older"), 5))])
    assert isinstance(results[0], StorageError) and isinstance(results[1], StorageError), results
    assert results[2] == (store.get_record("/kept"), False)   # lost to a committed record: answered
    assert store.get_record("/x") is None and os.listdir(store.tmp_dir) == []
    store._transaction = real
    results = store.commit_uploads([(_upload(store, b"new"), Record("/x", 10, _sha(b"new"), 3)),
                                    (_upload(store, b"old"), Record("/x", 5, _sha(b"old"), 3))])
    assert results == [(Record("/x", 10, _sha(b"new"), 3), True), (Record("/x", 10, _sha(b"new"), 3), False)]
    store.close()


def test_an_upload_replaces_a_blob_already_there(tmp_path):
    """A blob file already in blobs/ (left by a batch that failed at its folder fsync, or gone
    bad on the disk) is replaced by the upload just hashed and fsynced, not trusted as is."""
    store = ObjectStore(str(tmp_path / "s"))
    path = store.blob_path(_sha(b"good"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"rot!")
    assert store.commit_upload(_upload(store, b"good"), "/g", 1)[1]
    with store.open_blob(_sha(b"good")) as f:
        assert f.read() == b"good"
    assert os.listdir(store.tmp_dir) == []
    store.close()
