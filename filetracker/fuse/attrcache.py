"""A thread-safe time-to-live cache with an injectable clock.

Entries expire ``ttl`` seconds after they were stored.  The FUSE layer keeps
file attributes and folder listings here, so that ``ls -l`` of a folder and
the ``stat`` calls that follow cost one listing, not a request per file.
"""

import threading
import time

_MISSING = object()


class TTLCache:
    """``key -> value`` entries that expire ``ttl`` seconds after ``put``."""

    def __init__(self, ttl, clock=time.monotonic, max_entries=200_000):
        self.ttl = float(ttl)
        self.clock = clock
        self.max_entries = max_entries
        self._data = {}
        self._lock = threading.Lock()

    def get(self, key, default=None):
        """The fresh value of ``key``, or ``default`` when absent or expired."""
        with self._lock:
            item = self._data.get(key, _MISSING)
            if item is _MISSING:
                return default
            stamp, value = item
            if self.clock() - stamp >= self.ttl:
                del self._data[key]
                return default
            return value

    def put(self, key, value, stamp=None):
        """Store ``value``; ``stamp`` (clock units) backdates the entry, default now."""
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._evict_expired()
                if len(self._data) >= self.max_entries:
                    self._data.clear()  # a cache: dropping everything is always correct
            self._data[key] = (self.clock() if stamp is None else stamp, value)

    def pop(self, key):
        with self._lock:
            self._data.pop(key, None)

    def pop_prefix(self, prefix):
        """Forget ``prefix`` and every key below it (``prefix + '/...'``)."""
        with self._lock:
            below = prefix.rstrip("/") + "/"
            for key in [k for k in self._data if k == prefix or k.startswith(below)]:
                del self._data[key]

    def clear(self):
        with self._lock:
            self._data.clear()

    def _evict_expired(self):
        now = self.clock()
        for key in [k for k, (s, _) in self._data.items() if now - s >= self.ttl]:
            del self._data[key]

    def __len__(self):
        with self._lock:
            return len(self._data)
