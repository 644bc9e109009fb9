"""A node's state: its store, its ring (persisted) and a cache of partition digests.

* :class:`RingHolder` keeps the current :class:`~cluster.ring.Ring` and stores it in
  ``<dir>/ring.msgpack`` (temp file, fsync, rename, fsync of the folder), so a
  restarted node comes back with the ring it last accepted.
* :class:`DrainingList` keeps the cluster's *leaving members* (nodes being removed
  whose data must still reach the others) in ``<dir>/draining.msgpack``, written by
  ``filetracker-admin remove-node`` before the ring change, so an interrupted
  removal is resumed by a plain re-run (``rebalance`` or ``remove-node``).
* :class:`TrackedStore` wraps the :class:`~filetracker.storage.ObjectStore` and
  tells the :class:`DigestCache` which partition every write touched, so
  anti-entropy does not rescan unchanged partitions.  The public handlers of
  :mod:`filetracker.server` are given the wrapper, so their writes count too.
"""

import logging
import os
import threading
import time

import msgpack

from cluster.ring import Ring, RingError, partition_of
from filetracker.storage import ObjectStore, fsync_dir
from filetracker.storage.readcache import CachingStore, ReadCache

log = logging.getLogger("cluster.node")

RING_FILE = "ring.msgpack"
#: seconds a node reuses its list of foreign partitions (``GET /_cluster/foreign``): gateways
#: poll it, and each computation scans the store's partition index
FOREIGN_CACHE_SECONDS = 5.0
#: The digest of a partition with no record (sha256 of nothing), as the store computes it.
EMPTY_DIGEST = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class RingConflict(Exception):
    """A ring that may not replace the current one (older epoch, or same epoch and different)."""


class RingHolder:
    """The node's current ring; :meth:`install` persists a newer one atomically."""

    def __init__(self, dir, initial):
        self.path = os.path.join(dir, RING_FILE)
        self._lock = threading.Lock()
        stored = self._load()
        self.ring = stored if stored is not None else initial
        if stored is None:
            self._save(initial)
        elif stored.partition_power != initial.partition_power:
            log.warning("stored ring has partition power %d; --partition-power %d ignored",
                        stored.partition_power, initial.partition_power)

    def _load(self):
        try:
            with open(self.path, "rb") as f:
                return Ring.from_dict(msgpack.unpackb(f.read(), raw=False))
        except FileNotFoundError:
            return None
        except (ValueError, RingError, msgpack.UnpackException) as e:
            raise RingError("cannot read stored ring %s: %s" % (self.path, e)) from None

    def _save(self, ring):
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(ring.to_dict()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(self.path))

    def install(self, ring):
        """Adopt ``ring`` if newer: True if installed, False if it is the current one.

        Raises :class:`RingConflict` for an older epoch, an equal epoch with a
        different layout, or another partition power (fixed for a cluster's life).
        """
        with self._lock:
            current = self.ring
            if ring.partition_power != current.partition_power:
                raise RingConflict("partition power is fixed at %d (got %d)"
                                   % (current.partition_power, ring.partition_power))
            if ring.epoch < current.epoch:
                raise RingConflict("ring epoch %d is older than the current %d" % (ring.epoch, current.epoch))
            if ring.epoch == current.epoch:
                if ring.same_layout(current):
                    return False
                raise RingConflict("a different ring with epoch %d is already installed" % ring.epoch)
            self._save(ring)
            self.ring = ring
            log.info("installed ring epoch %d: %s", ring.epoch, [n.id for n in ring.nodes])
            return True


DRAINING_FILE = "draining.msgpack"


def _save_atomic(path, obj):
    """Write ``obj`` as msgpack to ``path``: temp file, fsync, rename, fsync of the folder."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(msgpack.packb(obj))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def check_draining(doc):
    """Validate a draining document ``{"version": int >= 0, "members": [{"id": str, "url": str}]}``
    with an optional ``"change": {"what": str, "epoch": int, "nodes": [url]}`` (the membership
    change that wrote this version, the ring epoch it claimed and, optionally, the URLs it writes
    that ring to: see ``cluster/admin/draining.py``); returns it normalised (members sorted by id,
    no duplicate id).  ValueError when malformed."""
    if not isinstance(doc, dict):
        raise ValueError("a draining document is a map")
    version = doc.get("version")
    members = doc.get("members")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError("version must be a non-negative integer")
    if not isinstance(members, list):
        raise ValueError("members must be a list")
    out = {}
    for m in members:
        if not (isinstance(m, dict) and isinstance(m.get("id"), str) and isinstance(m.get("url"), str)
                and m["id"] and m["url"].startswith(("http://", "https://"))):
            raise ValueError("each member needs an id and an http(s) url: %r" % (m,))
        out[m["id"]] = {"id": m["id"], "url": m["url"].rstrip("/")}
    checked = {"version": version, "members": [out[k] for k in sorted(out)]}
    change = doc.get("change")
    if change is not None:
        if not (isinstance(change, dict) and isinstance(change.get("what"), str)
                and isinstance(change.get("epoch"), int) and not isinstance(change.get("epoch"), bool)
                and change["epoch"] >= 0):
            raise ValueError("change needs a text 'what' and a non-negative integer 'epoch': %r" % (change,))
        checked["change"] = {"what": change["what"], "epoch": change["epoch"]}
        nodes = change.get("nodes")
        if nodes is not None:
            if not (isinstance(nodes, list) and all(isinstance(u, str) and u.startswith(("http://", "https://"))
                                                    for u in nodes)):
                raise ValueError("change nodes must be a list of http(s) urls: %r" % (nodes,))
            checked["change"]["nodes"] = [u.rstrip("/") for u in nodes]
    return checked


class DrainingList:
    """The leaving members as this node last learnt them: a last-writer-wins register.

    The admin writes a whole new document with ``version`` + 1; :meth:`install`
    keeps the highest version (an equal version must be identical), persisted
    atomically, so a restarted node still knows which members are draining.
    """

    def __init__(self, dir):
        self.path = os.path.join(dir, DRAINING_FILE)
        self._lock = threading.Lock()
        self.doc = {"version": 0, "members": []}
        try:
            with open(self.path, "rb") as f:
                self.doc = check_draining(msgpack.unpackb(f.read(), raw=False))
        except FileNotFoundError:
            pass
        except (ValueError, msgpack.UnpackException) as e:
            raise RingError("cannot read %s: %s" % (self.path, e)) from None

    def install(self, doc):
        """Adopt ``doc`` (already checked) if newer: True if installed, False if it is the
        current one.  :class:`RingConflict` for an older version or an equal one that differs."""
        with self._lock:
            current = self.doc
            if doc["version"] < current["version"]:
                raise RingConflict("draining list version %d is older than the current %d"
                                   % (doc["version"], current["version"]))
            if doc["version"] == current["version"]:
                if doc == current:
                    return False
                raise RingConflict("a different draining list with version %d is installed" % doc["version"])
            _save_atomic(self.path, doc)
            self.doc = doc
            log.info("draining list version %d: %s", doc["version"], [m["id"] for m in doc["members"]])
            return True


class DigestCache:
    """``partition -> digest`` of the local store, recomputed only after a change.

    A generation counter per partition makes a digest computed concurrently
    with a write be discarded rather than cached stale.
    """

    def __init__(self, store):
        self._store = store
        self._lock = threading.Lock()
        self._digests = {}
        self._gen = {}
        self._all_gen = 0

    def invalidate(self, partition=None):
        with self._lock:
            if partition is None:
                self._digests.clear()
                self._all_gen += 1
            else:
                self._digests.pop(partition, None)
                self._gen[partition] = self._gen.get(partition, 0) + 1

    def get(self, partition):
        with self._lock:
            cached = self._digests.get(partition)
            gen = (self._gen.get(partition, 0), self._all_gen)
        if cached is not None:
            return cached
        digest = self._store.partition_digest(partition)
        with self._lock:
            if (self._gen.get(partition, 0), self._all_gen) == gen:
                self._digests[partition] = digest
        return digest

    def all(self):
        """``{partition: digest}`` of every partition holding a record."""
        return {p: self.get(p) for p in self._store.partitions()}


class TrackedStore(CachingStore):
    """A :class:`~filetracker.storage.readcache.CachingStore` whose writes also invalidate
    the digests of the partitions they touch (after the write, before it returns)."""

    def __init__(self, store, partition_of_name, read_cache=None):
        self._partition = partition_of_name
        self.digests = DigestCache(store)
        super().__init__(store, read_cache)

    def _changed(self, name):
        super()._changed(name)
        self.digests.invalidate(None if name is None else self._partition(name))


class NodeState:
    """What every handler and task of one node shares."""

    def __init__(self, config):
        self.config = config
        self.id = config.node_id
        os.makedirs(config.dir, exist_ok=True)
        initial = Ring.initial((config.node_id,) + tuple(config.peers), replicas=config.replicas,
                               partition_power=config.partition_power)
        self.rings = RingHolder(config.dir, initial)
        self.draining = DrainingList(config.dir)
        power = self.rings.ring.partition_power
        self.partition_of = lambda name: partition_of(name, power)
        # replaced blobs are kept a while (reads under way), unless the disk is near its reserve
        self.raw_store = ObjectStore(config.dir, partition_of=self.partition_of,
                                     keep_replaced=getattr(config, "keep_replaced", 0.0),
                                     keep_min_free_bytes=2 * getattr(config, "min_free_bytes", 0))
        self.read_cache = ReadCache(getattr(config, "read_cache_bytes", 0))
        self.store = TrackedStore(self.raw_store, self.partition_of, self.read_cache)
        self.tasks = {}          # name -> Task (set by make_app)
        self.hints_taken = 0     # hinted writes accepted since start
        self.batched_files = 0   # files stored through POST /_cluster/store since start
        self.started = time.time()
        self._foreign_lock = threading.Lock()
        self._foreign = None     # (epoch, monotonic time, partitions) of the last computation

    @property
    def ring(self):
        return self.rings.ring

    def expired_before(self):
        """The version below which a tombstone is past ``tombstone_ttl``: it is not copied to a
        replica without a record of the name (:func:`filetracker.records.worth_copying`)."""
        return time.time() - getattr(self.config, "tombstone_ttl", 7 * 24 * 3600.0)

    def owns(self, partition):
        return self.ring.owns(self.id, partition)

    def foreign_partitions(self, max_age=FOREIGN_CACHE_SECONDS):
        """``(epoch, partitions)``: the partitions holding records here that this node does not
        own under its ring of that epoch (data still to hand off: moved partitions, hints).

        Recomputed when the ring changed or the last list is ``max_age`` seconds old, one
        computation at a time (blocking: an index probe per partition not owned).  A gateway asks these
        nodes too when it reads such a partition, until the list no longer has it.
        """
        with self._foreign_lock:
            ring = self.ring
            cached = self._foreign
            if cached is not None and cached[0] == ring.epoch and time.monotonic() - cached[1] < max_age:
                return cached[0], cached[2]
            started = time.monotonic()
            partitions = self.held_foreign(ring)
            self._foreign = (ring.epoch, started, partitions)
            return ring.epoch, partitions

    def held_foreign(self, ring):
        """The sorted partitions holding records here that this node does not own under ``ring``
        (blocking: an index probe per partition not owned, whatever the store holds)."""
        return self.store.partitions_holding(p for p in range(ring.partitions) if not ring.owns(self.id, p))

    def pending_handoff(self):
        """Records held here for partitions this node does not own (hints, moved partitions)."""
        return sum(self.store.count_records(p) for p in self.held_foreign(self.ring))

    def status(self):
        """The ``GET /_cluster/status`` document (blocking: run it in the executor)."""
        ring = self.ring
        stats = self.store.stats()
        return {
            "id": self.id, "epoch": ring.epoch, "nodes": [n.id for n in ring.nodes],
            "replicas": ring.n_replicas, "partition_power": ring.partition_power,
            "partitions_owned": len(ring.owned_partitions(self.id)),
            "partitions_held": len(self.store.partitions()),
            "files": stats["files"], "bytes": stats["bytes"], "tombstones": stats["tombstones"],
            "free_bytes": stats["free_bytes"], "pending_handoff": self.pending_handoff(),
            "retired_files": stats["retired_files"], "retired_bytes": stats["retired_bytes"],
            # older tombstones are not copied to a replica without the name (the admin's drill)
            "tombstone_ttl": getattr(self.config, "tombstone_ttl", None),
            "hints_taken": self.hints_taken, "uptime": round(time.time() - self.started, 1),
            "read_cache": self.read_cache.stats(),
            "tasks": {name: {"passes": t.passes, "last": t.last, "error": t.last_error}
                      for name, t in self.tasks.items()},
        }

    def close(self):
        self.raw_store.close()
