"""``protect_store(node)``: wire the reserved-space guard and the bitrot checks into a node.

Called by ``make_app`` right after the :class:`~cluster.node.state.NodeState` is
built and before any handler context takes ``node.store``:

* ``node.store`` becomes a :class:`~cluster.node.space.ReservedSpaceStore` when
  ``config.min_free_bytes`` > 0 (uploads refused with 507 below the reserve);
* ``node.integrity`` is the node's :class:`~cluster.node.integrity.Integrity`
  (its peer client is set by :func:`cluster.node.tasks.make_tasks`);
* ``node.store`` becomes a :class:`TrustWrites` store: a blob the node has just
  written counts as verified (:meth:`Integrity.trust_written`), so the first read
  after an upload does not hash it again;
* ``node.store.check_blob(sha256, f)`` is the hook that
  :func:`filetracker.server.streaming.open_for_read` calls before the public
  ``/files`` route serves a blob: a corrupt blob answers 503 with the reason.
"""

import os

from cluster.node.integrity import BlobCorrupt, Integrity
from cluster.node.space import ReservedSpaceStore, SpaceGuard
from filetracker.server import HTTPFail


def protect_store(node):
    cfg = node.config
    retired = node.raw_store.retired
    node.space = SpaceGuard(cfg.dir, getattr(cfg, "min_free_bytes", 0),
                            release=(lambda: retired.sweep(everything=True)) if retired is not None else None)
    if node.space.min_free_bytes > 0:
        node.store = ReservedSpaceStore(node.store, node.space)
    node.integrity = Integrity(node, cache_entries=getattr(cfg, "verify_cache_entries", 65536),
                               read_verify_max=getattr(cfg, "verify_reads_max_bytes", 256 << 20))
    node.integrity.requeue_quarantined()   # repairs a crash interrupted
    node.store = TrustWrites(node.store, node.integrity)
    if getattr(cfg, "verify_reads", True):
        node.store.check_blob = lambda sha256, f: check_or_fail(node.integrity, sha256, f)
    return node


def check_or_fail(integrity, sha256, f, name=None):
    """``integrity.check`` with a corrupt blob turned into a 503 answer (blocking)."""
    try:
        integrity.check_read(sha256, f, name=name)
    except BlobCorrupt as e:
        raise HTTPFail(503, str(e))


class TrustWrites:
    """A store whose ``commit_upload`` tells the node's :class:`Integrity` that the blob it
    placed is the file just written (see :meth:`Integrity.trust_written`).  Every other
    attribute is the wrapped store's."""

    def __init__(self, store, integrity):
        self._store = store
        self._integrity = integrity

    def __getattr__(self, attr):
        return getattr(self._store, attr)

    def commit_upload(self, upload, *args, **kwargs):
        try:
            written = os.stat(upload.path)
        except OSError:
            written = None
        result = self._store.commit_upload(upload, *args, **kwargs)
        if written is not None and result[1]:
            self._integrity.trust_written(upload.sha256, written, upload.size)
        return result

    def commit_uploads(self, items):
        written = []
        for upload, _ in items:
            try:
                written.append(os.stat(upload.path))
            except OSError:
                written.append(None)
        results = self._store.commit_uploads(items)
        for (upload, _), stat, result in zip(items, written, results, strict=True):
            if stat is not None and isinstance(result, tuple) and result[1]:
                self._integrity.trust_written(upload.sha256, stat, upload.size)
        return results
