"""Moving records and their blobs between this node's store and one peer (:class:`Replicator`).

The node's background tasks (:mod:`cluster.node.tasks`: anti-entropy, handoff)
decide *what* moves; this module moves it.  Blocking: it runs on the tasks'
threads, never on the event loop.  Small blobs (at most
:data:`~cluster.peers.INLINE_BLOB_MAX` bytes) travel many to a request
(:func:`inline_batches`) and are committed many to a transaction
(:func:`cluster.node.batches.store_many`); larger ones, and every blob of a peer
found without the batch endpoints (an older version, :class:`_OldPeers`), are
streamed one by one.
"""

import logging
import time

from cluster.node.batches import store_many
from cluster.peers import (
    INLINE_BATCH_BYTES,
    INLINE_BATCH_COUNT,
    INLINE_BLOB_MAX,
    MAX_PARTITIONS_PER_REQUEST,
    PeerError,
)
from filetracker.storage import BlobMissing, StorageError

# the name the messages had when this code lived in tasks.py: operators' log filters keep working
log = logging.getLogger("cluster.node.tasks")

#: Records offered per POST /_cluster/records.
PUSH_BATCH = 500
#: seconds a peer found without a batch endpoint is served the old way before it is asked again
OLD_PEER_RECHECK = 600


class _OldPeers:
    """Peers found without one of the batch endpoints (an older version), served the old way
    for :data:`OLD_PEER_RECHECK` seconds, then asked again (a rolling upgrade ends)."""

    def __init__(self, what):
        self.what = what
        self._since = {}  # url -> monotonic time it was found old

    def mark(self, url):
        if url not in self:
            log.info("%s has no %s: one at a time for %ds", url, self.what, OLD_PEER_RECHECK)
        self._since[url] = time.monotonic()

    def __contains__(self, url):
        since = self._since.get(url)
        return since is not None and time.monotonic() - since < OLD_PEER_RECHECK


def _by_size(records, batched):
    """``(small, single)``: the records to move in batches (at most INLINE_BLOB_MAX bytes, when
    ``batched``: the peer takes batches) and those to move one by one.  ``batched`` is read
    once by the caller: another thread may mark the peer old meanwhile."""
    if not batched:
        return [], list(records)
    return [r for r in records if r.size <= INLINE_BLOB_MAX], [r for r in records if r.size > INLINE_BLOB_MAX]


def inline_batches(records):
    """``records`` (each at most INLINE_BLOB_MAX bytes) cut into runs of at most
    INLINE_BATCH_COUNT records and INLINE_BATCH_BYTES bytes, in order."""
    batch, size = [], 0
    for r in records:
        if batch and (len(batch) == INLINE_BATCH_COUNT or size + r.size > INLINE_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(r)
        size += r.size
    if batch:
        yield batch


class Replicator:
    """Moving records (and their blobs) between this node's store and one peer.

    Small blobs (at most :data:`~cluster.peers.INLINE_BLOB_MAX`) move many to a
    request and are committed many to a transaction (``POST /_cluster/read`` to
    pull, content inside ``POST /_cluster/records`` to push); larger ones, and
    every blob of a peer without those endpoints, are streamed one by one.
    Why: a record moved alone costs both nodes an HTTP exchange and a WAL fsync,
    and those, not the bytes, bound how fast a ring change moves small files.
    """

    def __init__(self, node, client):
        self.node = node
        self.client = client
        self._no_batch_read = _OldPeers("POST /_cluster/read")   # pulled one by one
        self._no_inline = _OldPeers("inline content")              # pushed one by one
        self._single_lists = _OldPeers("POST /_cluster/partitions")  # record lists one by one

    def iter_partition_records(self, url, partitions):
        """The peer's records of ``partitions``, as ``{partition: [Record]}`` chunks (one per
        request: as many whole partitions as the peer lists in one answer, or one from a
        peer without ``POST /_cluster/partitions``), so a caller holds one chunk at a time."""
        pending = list(partitions)
        while pending:
            if url in self._single_lists:
                p = pending.pop(0)
                yield {p: self.client.partition_records(url, p)}
                continue
            try:
                got = self.client.partitions_records(url, pending[:MAX_PARTITIONS_PER_REQUEST])
            except PeerError as e:
                if e.status not in (404, 405):
                    raise
                self._single_lists.mark(url)
                continue
            pending = [p for p in pending if p not in got]
            yield got

    def partition_records(self, url, partitions):
        """``{partition: [Record]}`` of the peer's records of every one of ``partitions``."""
        out = {}
        for chunk in self.iter_partition_records(url, partitions):
            out.update(chunk)
        return out

    @property
    def store(self):
        return self.node.store

    def _consume(self, nbytes):
        if self.client.limiter is not None:
            self.client.limiter.consume(nbytes)

    def pull(self, url, records):
        """Merge ``records`` (a peer's winners) here, fetching blobs we lack.  Returns the count applied."""
        applied = 0
        fetch = []
        for r in records:
            try:
                if r.deleted or self.store.has_blob(r.sha256):
                    try:
                        _, ok = self.store.apply_record(r)
                        applied += ok
                        continue
                    except BlobMissing:
                        pass  # the blob vanished meanwhile: fetch it
                fetch.append(r)
            except (StorageError, ValueError) as e:
                log.warning("pull of %s from %s failed: %s", r.name, url, e)
        small, single = _by_size(fetch, url not in self._no_batch_read)
        for batch in inline_batches(small):
            got, rest = self._pull_inline(url, batch)
            applied += got
            single.extend(rest)
        return applied + self._pull_one_by_one(url, single)

    def _pull_inline(self, url, batch):
        """Fetch and commit ``batch`` in one request and one group commit: ``(applied, left)``,
        ``left`` the records to fetch one by one (the peer's record changed, no endpoint)."""
        try:
            rows = self.client.read_small(url, [r.name for r in batch])
        except PeerError as e:
            if e.status is None:
                raise  # the peer is down: stop talking to it for this pass
            if e.status in (404, 405):
                self._no_batch_read.mark(url)
            else:
                log.warning("batched pull from %s failed: %s", url, e)
            return 0, batch
        contents, left = [], []
        for r, row in zip(batch, rows, strict=True):
            if not (isinstance(row, list) and len(row) == 5 and row[0] == "ok" and row[2] == r.sha256
                    and row[3] == r.size and isinstance(row[4], bytes)):
                left.append(r)  # changed there meanwhile, larger, corrupt: the general path decides
                continue
            self._consume(len(row[4]))
            contents.append((r, row[4]))
        applied = 0
        for (r, _), result in zip(contents, store_many(self.store, contents) if contents else [], strict=True):
            if isinstance(result, Exception):
                log.warning("pull of %s from %s failed: %s", r.name, url, result)
            else:
                applied += result[1]
        return applied, left

    def _pull_one_by_one(self, url, records):
        applied = 0
        for r in records:
            try:
                upload = self.store.begin_upload()
                try:
                    self.client.fetch_blob(url, r.sha256, upload.write)
                    _, ok = self.store.commit_upload(upload, r.name, r.version, expected_sha256=r.sha256,
                                                     expected_size=r.size)
                    applied += ok
                finally:
                    upload.abort()  # no-op once committed (the temp file is gone)
            except PeerError as e:
                if e.status is None:
                    raise  # the peer is down: stop talking to it for this pass
                log.warning("pull of %s from %s failed: %s", r.name, url, e)
            except (StorageError, ValueError) as e:
                log.warning("pull of %s from %s failed: %s", r.name, url, e)
        return applied

    def push(self, url, records):
        """Offer ``records`` to a peer and send the blobs it lacks.  Returns the count sent."""
        sent = 0
        for i in range(0, len(records), PUSH_BATCH):
            batch = records[i:i + PUSH_BATCH]
            missing = set(self.client.post_records(url, batch))
            lacking = [r for r in batch if not r.deleted and r.sha256 in missing]
            sent += len(batch) - len(lacking)
            small, single = _by_size(lacking, url not in self._no_inline)
            for group in inline_batches(small):
                carried, rest = self._push_inline(url, group)
                sent += carried
                single.extend(rest)
            sent += self._push_one_by_one(url, single)
        return sent

    def _push_inline(self, url, group):
        """Send ``group`` with its content in one request: ``(sent, left)``, ``left`` the
        records the peer still lacks (to stream one by one)."""
        blobs, odd = {}, []
        for r in group:
            try:
                with self.store.open_blob(r.sha256) as f:
                    data = f.read(r.size + 1)
            except (FileNotFoundError, StorageError):
                continue  # replaced here meanwhile; the newer record travels next pass
            if len(data) == r.size:
                blobs[r.sha256] = data
            else:
                odd.append(r)  # not the record's size: the general path reports it
        present = [r for r in group if r.sha256 in blobs]
        if not present:
            return 0, odd
        self._consume(sum(len(d) for d in blobs.values()))
        try:
            missing, understood = self.client.post_records_inline(url, present, blobs)
        except PeerError as e:
            if e.status is None:
                raise
            log.warning("batched push to %s failed: %s", url, e)
            return 0, present + odd
        if not understood:
            self._no_inline.mark(url)
        missing = set(missing)
        left = [r for r in present if r.sha256 in missing]
        return len(present) - len(left), left + odd

    def _push_one_by_one(self, url, records):
        sent = 0
        for r in records:
            try:
                f = self.store.open_blob(r.sha256)
            except (FileNotFoundError, StorageError):
                continue  # replaced here meanwhile; the newer record travels next pass
            try:
                self.client.put_file(url, r, f)
                sent += 1
            except PeerError as e:
                if e.status is None:
                    raise
                log.warning("push of %s to %s failed: %s", r.name, url, e)
            finally:
                f.close()
        return sent

