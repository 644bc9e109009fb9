"""Small files many at a time: :func:`store_many` writes bodies held in memory and commits
them in one group commit.

Used where records travel between nodes in batches (``POST /_cluster/records``
with inline content, and the pulls of :class:`cluster.node.tasks.Replicator`)
and for the batched small PUTs of gateways (``POST /_cluster/store``):
one transaction and one WAL fsync for the batch instead of one per record.
Every body is at most :data:`cluster.peers.INLINE_BLOB_MAX` bytes.
"""

from filetracker.storage import StorageError


def store_many(store, contents):
    """Blocking: store ``[(record, data)]`` (small bodies in memory, each announced by its data
    record) in one group commit (:meth:`ObjectStore.commit_uploads`).  A "record" needs only
    ``name``, ``version``, ``sha256`` and ``size``; a None checksum or size is not checked
    (``POST /_cluster/store``: what the client did not announce).

    Returns one entry per item, in order: ``(winner, applied)``, or the exception that
    item met (the reserve or a full disk refusing the write, a checksum or size
    mismatch); nothing of a failed item stays on disk.
    """
    results = [None] * len(contents)
    written, uploads, where = [], [], []
    try:
        # every file written and its writeback started first, then each fsynced: the disk
        # gets them all at once instead of one per fsync (at most INLINE_BATCH_COUNT files open)
        for i, (record, data) in enumerate(contents):
            try:
                upload = store.begin_upload()
                upload.write(data)
                upload.start_writeback()
            except (StorageError, OSError) as e:  # a failed write removed its upload
                results[i] = e
                continue
            written.append((i, upload, record))
        for i, upload, record in written:
            try:
                upload.finish()
            except (StorageError, OSError) as e:  # a failed finish removed its upload
                results[i] = e
                continue
            uploads.append((upload, record))
            where.append(i)
    except BaseException:
        for _, upload, _ in written:
            upload.abort()
        raise
    if uploads:
        for i, result in zip(where, store.commit_uploads(uploads), strict=True):
            results[i] = result
    return results
