"""Blobs kept readable for a while after the last record that referenced them was replaced.

A cluster gateway serves a large GET in two steps: the record and the first
piece of the body, then the rest of the blob by its content address
(``GET /_cluster/blobs/<sha256>``), from the same replica or, when that one
fails midway, from another.  If the file is overwritten in between, every
replica has already committed the new record and unlinked the old blob, so the
second step found nothing: the client had the headers and the first piece of a
200 and then a closed connection.  (The single server opens the blob once and
streams from that descriptor, which an unlink does not disturb.)

So a node does not unlink a blob that stops being referenced: it moves it into
``retired/`` (a rename, same filesystem) and unlinks it ``keep_seconds`` later.
:meth:`RetiredBlobs.open` finds it there meanwhile.  Nothing references a
retired blob, so keeping it is never visible to a reader of names; a file left
in ``retired/`` by a crash or a stop counts as retired at the next start, so it
goes ``keep_seconds`` later.

While the disk has less than ``min_free_bytes`` free, a blob is unlinked at
once instead, and so is every retired one: space freed by overwrites and deletes
must not wait when the disk is nearly full.  The cost otherwise: a node holds the
blobs replaced in the last ``keep_seconds`` on top of its live data (an
overwrite-heavy load of 60 MB/s with the default 60 s: about 3.6 GB).
"""

import collections
import os
import threading
import time

from filetracker.storage.upload import discard


class RetiredBlobs:
    """The ``retired/`` folder of one store: ``retire``, ``open``, ``sweep``.  Thread-safe."""

    def __init__(self, folder, keep_seconds, min_free_bytes=0, clock=time.monotonic):
        self.folder = folder
        self.keep_seconds = float(keep_seconds)
        self.min_free_bytes = int(min_free_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._since = collections.OrderedDict()   # sha256 -> (clock() when retired, size), oldest first
        self._bytes = 0
        os.makedirs(folder, exist_ok=True)
        now = clock()
        for sha in sorted(os.listdir(folder)):   # left by a crash or a stop: gone after one period
            self._add(sha, now, _size(self.path(sha)))

    def path(self, sha256):
        return os.path.join(self.folder, sha256)

    def retire(self, blob_path, sha256):
        """Move the unreferenced blob at ``blob_path`` here (or unlink it when the disk is low).

        Called under the store lock, after the commit that stopped referencing it.
        """
        if self.min_free_bytes and self._free_bytes() < self.min_free_bytes:
            discard(blob_path)
            self.sweep(everything=True)   # space first: reads under way may fail, writes must not
            return
        # the rename and the bookkeeping in one hold of the lock that the sweep's unlinks take
        # too: a sweep must never unlink a copy of the same content retired just now
        with self._lock:
            size = _size(blob_path)
            try:
                os.replace(blob_path, self.path(sha256))
            except FileNotFoundError:
                return
            self._add(sha256, self._clock(), size)
        self.sweep()

    def open(self, sha256):
        """Open a retired blob for reading (FileNotFoundError when it is not here)."""
        return open(self.path(sha256), "rb")

    def sweep(self, now=None, everything=False):
        """Unlink the blobs retired ``keep_seconds`` ago or earlier (all of them with
        ``everything``); returns how many."""
        now = self._clock() if now is None else now
        count = 0
        with self._lock:
            while self._since:
                sha, (since, size) = next(iter(self._since.items()))
                if now - since < self.keep_seconds and not everything:
                    break
                self._since.popitem(last=False)
                self._bytes -= size
                discard(self.path(sha))
                count += 1
        return count

    def __len__(self):
        with self._lock:
            return len(self._since)

    def stats(self):
        """``{"files", "bytes"}`` held here now: disk that live data does not account for."""
        with self._lock:
            return {"files": len(self._since), "bytes": self._bytes}

    def _add(self, sha256, since, size):
        """Book ``sha256`` as retired at ``since`` (again: its period restarts).  Under the lock."""
        previous = self._since.pop(sha256, None)
        if previous is not None:
            self._bytes -= previous[1]
        self._since[sha256] = (since, size)
        self._bytes += size

    def _free_bytes(self):
        st = os.statvfs(self.folder)
        return st.f_bavail * st.f_frsize


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
