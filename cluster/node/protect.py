"""``protect_store(node)``: wire the reserved-space guard and the bitrot checks into a node.

Called by ``make_app`` right after the :class:`~cluster.node.state.NodeState` is
built and before any handler context takes ``node.store``:

* ``node.store`` becomes a :class:`~cluster.node.space.ReservedSpaceStore` when
  ``config.min_free_bytes`` > 0 (uploads refused with 507 below the reserve);
* ``node.integrity`` is the node's :class:`~cluster.node.integrity.Integrity`
  (its peer client is set by :func:`cluster.node.tasks.make_tasks`);
* ``node.store.check_blob(sha256, f)`` is the hook that
  :func:`filetracker.server.streaming.open_for_read` calls before the public
  ``/files`` route serves a blob: a corrupt blob answers 503 with the reason.
"""

from cluster.node.integrity import BlobCorrupt, Integrity
from cluster.node.space import ReservedSpaceStore, SpaceGuard
from filetracker.server import HTTPFail


def protect_store(node):
    cfg = node.config
    node.space = SpaceGuard(cfg.dir, getattr(cfg, "min_free_bytes", 0))
    if node.space.min_free_bytes > 0:
        node.store = ReservedSpaceStore(node.store, node.space)
    node.integrity = Integrity(node, cache_entries=getattr(cfg, "verify_cache_entries", 65536),
                               read_verify_max=getattr(cfg, "verify_reads_max_bytes", 256 << 20))
    node.integrity.requeue_quarantined()   # repairs a crash interrupted
    if getattr(cfg, "verify_reads", True):
        node.store.check_blob = lambda sha256, f: check_or_fail(node.integrity, sha256, f)
    return node


def check_or_fail(integrity, sha256, f, name=None):
    """``integrity.check`` with a corrupt blob turned into a 503 answer (blocking)."""
    try:
        integrity.check_read(sha256, f, name=name)
    except BlobCorrupt as e:
        raise HTTPFail(503, str(e))
