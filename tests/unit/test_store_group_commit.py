"""ObjectStore's group commit: concurrent commits give the same results as one at a time."""

import hashlib
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
