"""Small files many at a time: :func:`store_many` writes bodies held in memory and commits
them in one group commit.

Used where records travel between nodes in batches (``POST /_cluster/records``
with inline content, and the pulls of :class:`cluster.node.replicator.Replicator`)
and for the batched small PUTs of gateways (``POST /_cluster/store``):
one transaction and one WAL fsync for the batch instead of one per record.
Every body is at most :data:`cluster.peers.INLINE_BLOB_MAX` bytes.
"""

from filetracker.storage import StorageError

#: files written (and their writeback started) before the first of them is fsynced: the disk
#: gets them together, and a call never holds more files open than this
WRITE_AHEAD = 16


def store_many(store, contents):
    """Blocking: store ``[(record, data)]`` (small bodies in memory, each announced by its data
    record) in one group commit (:meth:`ObjectStore.commit_uploads`).  A "record" needs only
    ``name``, ``version``, ``sha256`` and ``size``; a None checksum or size is not checked
    (``POST /_cluster/store``: what the client did not announce).

    Files go :data:`WRITE_AHEAD` at a time: each is written and its writeback started, then
    each is fsynced as before (every file is fsynced before its record commits).

    Returns one entry per item, in order: ``(winner, applied)``, or the exception that
    item met (the reserve or a full disk refusing the write, a checksum or size
    mismatch); nothing of a failed item stays on disk, nor of any item when something
    else interrupts the call (it is raised).
    """
    results = [None] * len(contents)
    begun = []      # every upload: all aborted if something unexpected interrupts the batch
    finished = []   # (index, upload, record), fsynced
    try:
        for start in range(0, len(contents), WRITE_AHEAD):
            written = []
            for i in range(start, min(start + WRITE_AHEAD, len(contents))):
                record, data = contents[i]
                try:
                    upload = store.begin_upload()
                    begun.append(upload)
                    upload.write(data)
                    upload.start_writeback()
                except (StorageError, OSError) as e:  # a failed write removed its upload
                    results[i] = e
                    continue
                written.append((i, upload, record))
            for i, upload, record in written:
                try:
                    upload.finish()  # fsynced and closed
                except (StorageError, OSError) as e:  # a failed finish removed its upload
                    results[i] = e
                    continue
                finished.append((i, upload, record))
    except BaseException:
        for upload in begun:
            upload.abort()
        raise
    if finished:
        committed = store.commit_uploads([(upload, record) for _, upload, record in finished])
        for (i, _, _), result in zip(finished, committed, strict=True):
            results[i] = result
    return results
