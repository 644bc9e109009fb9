"""A node's cache of recently read records and small verified bodies, served without a disk hop.

Why: a small GET's disk work (a SQLite lookup, an open, a read from the page
cache: about 20 us) is cheap, but handing it to an executor thread and back
costs the event loop several times that (a thread wake-up and two GIL
hand-overs), and a gateway read costs that on two replicas.  A hit here is
answered on the event loop with no disk work at all.  bench/README.md has the
figures.

Contract (what keeps it exact, not "eventually" right):

* An entry is ``(record, data)``: the store's record of a name (a tombstone
  included) and, for a live record of at most ``max_item_bytes``, the whole
  body, which was verified against the record's SHA-256 when it was read (the
  read paths run the node's bitrot check first).  ``data`` is None for
  record-only entries (HEAD, lookups, larger files).
* Every record write of the node goes through
  :class:`cluster.node.state.TrackedStore`, which calls :meth:`invalidate`
  with the name (or None: everything) after the write and *before* the write
  is acknowledged, so no read that starts after an acknowledged write is
  answered from an older entry.
* A read that fills the cache took :meth:`generation` of the name before it
  looked at the store; :meth:`fill` drops the entry when an invalidation of
  that name (or of a name hashing to the same one of :data:`BUCKETS` counters,
  or of everything) happened since, so a read racing a write can never put
  back the record the write replaced.
* Bodies are immutable bytes; bitrot on disk after the check does not reach
  them (the scrubber still finds and repairs it on disk).

Bounded by ``max_bytes`` (bodies, names and a fixed charge per entry), least
recently used first out.  Only the node's own process writes its store (another
process writing the same folder would not invalidate this cache: run one node per
data folder, as ``filetracker-node`` assumes anyway).  Thread-safe: the event loop reads, executor threads
fill and invalidate.
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
