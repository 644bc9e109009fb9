"""How records are cut into the requests that carry small blobs between nodes (pure logic)."""

from cluster.node.replicator import inline_batches
from cluster.node.tasks import GROUP_RECORDS, PARTITION_GROUP, _cut, _groups
from cluster.peers import INLINE_BATCH_BYTES, INLINE_BATCH_COUNT, INLINE_BLOB_MAX
from filetracker.records import Record


def _sizes(batches):
    return [[r.size for r in b] for b in batches]


def _records(*sizes):
    return [Record("/f%d" % i, 1, "0" * 64, s) for i, s in enumerate(sizes)]


def test_limits_are_what_the_nodes_accept():
    assert (INLINE_BLOB_MAX, INLINE_BATCH_COUNT, INLINE_BATCH_BYTES) == (65536, 64, 262144)


def test_batches_stop_at_the_count_and_at_the_bytes():
    assert _sizes(inline_batches([])) == []
    assert _sizes(inline_batches(_records(0, 0, 0))) == [[0, 0, 0]]
    assert [len(b) for b in inline_batches(_records(*[10] * 130))] == [64, 64, 2]
    # 4 blobs of 64 KiB fill 256 KiB exactly; the fifth starts the next batch
    assert _sizes(inline_batches(_records(*[65536] * 5))) == [[65536] * 4, [65536]]
    assert _sizes(inline_batches(_records(65536, 65536, 65536, 65535, 2, 1))) == \
        [[65536, 65536, 65536, 65535], [2, 1]]


def test_partitions_are_grouped_per_peer_in_order():
    work = [(p, "http://a") for p in range(40)] + [(7, "http://b"), (3, "http://b")]
    one = lambda p: 1  # noqa: E731
    assert _groups(work, one) == [("http://a", list(range(32))), ("http://a", list(range(32, 40))),
                                  ("http://b", [7, 3])]
    assert _groups([], one) == []
    # 4 workers share 40 partitions: runs of 10, so large files still move 4 at a time
    assert [len(g) for _, g in _groups(work, one, workers=4)] == [10, 10, 10, 10, 1, 1]


def test_runs_stop_at_the_records_held_here():
    sizes = {0: 3000, 1: 1500, 2: 600, 3: 9000, 4: 1, 5: 4999, 6: 1}
    assert _cut(list(sizes), sizes.get) == [[0, 1], [2], [3], [4, 5], [6]]
    assert GROUP_RECORDS == 5000 and PARTITION_GROUP == 32
    assert _cut([], sizes.get) == []
