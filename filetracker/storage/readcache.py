"""A cache of recently read records and small bodies of one store, served without a disk hop.

Why: a small GET's disk work (a SQLite lookup, an open, a read from the page
cache: about 20 us) is cheap, but handing it to an executor thread and back
costs the event loop several times that (a thread wake-up and two GIL
hand-overs), and a gateway read costs that on two replicas.  A hit here is
answered on the event loop with no disk work at all.  bench/README.md has the
figures.  Used by the storage nodes and by ``filetracker-server`` (one process).

Contract (what keeps it exact, not "eventually" right):

* An entry is ``(record, data)``: the store's record of a name (a tombstone
  included) and, for a live record of at most ``max_item_bytes``, the whole
  body as it was served (on a node: after the bitrot check; only checked
  bodies are kept).  ``data`` is None for record-only entries (HEAD, lookups,
  larger files).
* Every record write goes through :class:`CachingStore` (on a node, its
  subclass :class:`cluster.node.state.TrackedStore`), which calls
  :meth:`ReadCache.invalidate` with the name (or None: everything) after the
  write and *before* the write is acknowledged, so no read that starts after
  an acknowledged write is answered from an older entry.
* A read that fills the cache took :meth:`ReadCache.generation` of the name
  before it looked at the store; :meth:`ReadCache.fill` drops the entry when
  an invalidation of that name (or of a name hashing to the same one of
  :data:`BUCKETS` counters, or of everything) happened since, so a read
  racing a write can never put back the record the write replaced.
* Bodies are immutable bytes; bitrot on disk after the check does not reach
  them (a node's scrubber still finds and repairs it on disk, and a
  quarantine empties the cache).

Bounded by ``max_bytes`` (bodies, names and a fixed charge per entry), least
recently used first out.  Only the process that owns the cache may write the
store: another process writing the same folder would not invalidate it (so
``filetracker-server --workers N`` with N > 1 runs without one).  Thread-safe:
the event loop reads, executor threads fill and invalidate.
"""

import sys
import threading
from collections import OrderedDict

#: bytes charged per entry on top of its body and name (the record, its sha256, the tuple, the dict slot)
ENTRY_OVERHEAD = 400
#: invalidation counters: a write makes only fills of names in its bucket retry later
BUCKETS = 4096


class ReadCache:
    """``name -> (record, data or None)``, LRU, at most ``max_bytes`` (see the module docstring)."""

    def __init__(self, max_bytes, max_item_bytes=64 * 1024):
        self.max_bytes = max(0, int(max_bytes))
        self.max_item_bytes = max_item_bytes
        self._lock = threading.Lock()
        self._entries = OrderedDict()
        self._bytes = 0
        self._everything = 0            # bumped by invalidate(None)
        self._buckets = [0] * BUCKETS   # bumped by invalidate(name) of a name in the bucket
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self):
        return self.max_bytes > 0

    def generation(self, name):
        """Take this before reading the store for a later :meth:`fill` of ``name``."""
        with self._lock:
            return self._everything, self._buckets[hash(name) % BUCKETS]

    def get(self, name, want_body=False):
        """The entry of ``name``, or None.  With ``want_body`` an entry of a live record
        without its body counts as a miss (the caller must read the body)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or (want_body and entry[1] is None and not entry[0].deleted):
                self.misses += 1
                return None
            self._entries.move_to_end(name)
            self.hits += 1
            return entry

    def fill(self, name, record, data, generation):
        """Remember ``record`` (and ``data``, its whole verified body, or None) for ``name`` if no
        invalidation happened since ``generation``; a body too large is dropped, the record kept."""
        if not self.enabled or record is None:
            return
        if data is not None and (record.deleted or len(data) != record.size or len(data) > self.max_item_bytes):
            data = None
        name = record.name  # one string object for the key and the record
        cost = self._cost((record, data))
        with self._lock:
            if generation != (self._everything, self._buckets[hash(name) % BUCKETS]):
                return
            old = self._entries.get(name)
            if old is not None:
                if old[0] == record and old[1] is not None and data is None:
                    return  # keep the body we have for the same record
                self._bytes -= self._cost(old)
            self._entries[name] = (record, data)
            self._entries.move_to_end(name)
            self._bytes += cost
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= self._cost(dropped)

    def invalidate(self, name=None):
        """Forget ``name`` (None: every entry).  Called after every record write."""
        with self._lock:
            if name is None:
                self._everything += 1
                self._entries.clear()
                self._bytes = 0
                return
            self._buckets[hash(name) % BUCKETS] += 1
            old = self._entries.pop(name, None)
            if old is not None:
                self._bytes -= self._cost(old)

    def stats(self):
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses}

    @staticmethod
    def _cost(entry):
        record, data = entry
        return ENTRY_OVERHEAD + sys.getsizeof(record.name) + (len(data) if data is not None else 0)


class CachingStore:
    """An :class:`~filetracker.storage.ObjectStore` whose record writes invalidate
    ``read_cache`` (a :class:`ReadCache`, or None) after the write, before they return.

    Every attribute not overridden here is the store's own.  Subclasses extend
    :meth:`_changed` (called with the name written, or None for "anything").
    """

    def __init__(self, store, read_cache=None):
        self._store = store
        self.read_cache = read_cache
        # verify(repair=True) drops records one by one during a long pass: forget each at once
        store.on_record_dropped = self._changed

    def __getattr__(self, attr):
        return getattr(self._store, attr)

    def _changed(self, name):
        if self.read_cache is not None:
            self.read_cache.invalidate(name)

    def commit_upload(self, upload, name, *args, **kwargs):
        try:
            return self._store.commit_upload(upload, name, *args, **kwargs)
        finally:
            self._changed(name)

    def commit_uploads(self, items):
        try:
            return self._store.commit_uploads(items)
        finally:
            for _, record in items:
                self._changed(record.name)

    def put_record(self, record, blob_path=None):
        try:
            return self._store.put_record(record, blob_path)
        finally:
            self._changed(record.name)

    def apply_record(self, record):
        try:
            return self._store.apply_record(record)
        finally:
            self._changed(record.name)

    def delete(self, name, version):
        try:
            return self._store.delete(name, version)
        finally:
            self._changed(name)

    def forget(self, name, record):
        try:
            return self._store.forget(name, record)
        finally:
            self._changed(name)

    def reclaim_tombstones(self, older_than_seconds):
        removed = None
        try:
            removed = self._store.reclaim_tombstones(older_than_seconds)
            return removed
        finally:
            if removed != 0:  # something removed, or an error: assume anything changed
                self._changed(None)

    def verify(self, repair=False):
        try:
            return self._store.verify(repair=repair)
        finally:
            if repair:
                self._changed(None)
