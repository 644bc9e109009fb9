"""Bitrot defence of a node: verify blobs before serving them, quarantine bad copies, repair.

Blobs are content-addressed (their file name is the SHA-256 of their bytes), so
a blob is checked by hashing it.  :class:`Integrity` does that for the read
paths (the internal ``/_cluster/blobs`` and ``/_cluster/files`` handlers and the
node's public ``/files`` route through the ``check_blob`` hook of
:func:`filetracker.server.streaming.open_for_read`) and for the scrubber:

* **before the first byte** of a blob is served it is hashed whole (streamed
  with ``os.pread`` in 1 MiB pieces, in the executor thread that calls
  :meth:`Integrity.check`, never the whole file in memory).  A blob that
  verified is remembered in a bounded LRU keyed by ``(sha256, st_dev, st_ino,
  st_size, st_mtime_ns)``, so a large file read in ranges (pieces) by a gateway is
  hashed once, not per range, and a blob replaced or rewritten (new inode or
  mtime) is hashed again.  Concurrent first reads of one blob share one hash
  (single flight).
* **a blob this node has just written** (an upload hashed as it arrived,
  fsynced, then renamed into place) is entered in the LRU by
  :meth:`Integrity.trust_written`: hashing it at the first read would read the
  same pages back from the page cache and could not find anything.
* **on a mismatch** the blob is moved to ``<dir>/quarantine/`` (under the store
  lock, only if it is still the same file, see
  :meth:`filetracker.storage.ObjectStore.quarantine_blob`), the read fails with
  :class:`BlobCorrupt` (the handlers answer 503 ``checksum mismatch ...``, so a
  gateway moves on to the next replica before any byte was sent), and a repair
  is queued.
* **repair** (:meth:`Integrity.repair_pending`, run by the ``repair`` task)
  fetches the blob by its content address from peers (the owners of the name's
  partition first when the name is known, then every other member), checks its
  SHA-256 while it is written to ``tmp/`` and installs it with
  :meth:`~filetracker.storage.ObjectStore.restore_blob`.  The records are not
  touched: they were right, only the bytes were wrong.

Large blobs: hashing a whole blob before the first byte costs its size in disk
reads (about 1 s per GiB from the page cache, several from a disk), which a
gateway waiting for the first piece of a multi-GiB file would take for a hung
node.  So a blob larger than ``read_verify_max`` bytes (``--verify-reads-max-bytes``,
default 256 MiB) is served at once and verified in the background (one thread,
deduplicated): corruption found there is quarantined and repaired the same way,
and later reads no longer see the bad copy, but the bytes of reads already under
way were not checked first.  Smaller blobs are never served unverified.

What the LRU cannot see: bytes that rot on disk *after* a successful check
without the file's mtime changing keep being served until the entry ages out of
the LRU.  The scrubber (:mod:`cluster.node.scrub`) re-hashes every blob
regardless of the LRU, which bounds that window by the scrub period.

Retention of ``quarantine/``: a quarantined copy is named ``<sha256>.<ns>``.
Once a good copy of that blob is installed again (by :meth:`Integrity.repair_one`,
or found present later: an upload, a replica push, a repair before a restart)
the copy is renamed ``<sha256>.<ns>.repaired`` with its mtime set to that
moment, and :meth:`Integrity.prune_quarantine` (run by the ``repair`` and
``scrub`` task passes, no thread of its own) deletes it ``quarantine_keep``
seconds later (``--quarantine-keep``, default 7 days, 0: at the next pass).
``quarantine_max_bytes`` (``--quarantine-max-bytes``, 0: no cap) also drops the
oldest repaired copies while the folder holds more bytes than that.  Copies of
blobs not repaired yet are never deleted: they may be the only evidence (or,
for a blob no peer holds, the only bytes) left.
"""

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from cluster.peers import PeerError
from filetracker.storage import StorageError
from filetracker.storage.store import is_sha256

log = logging.getLogger("cluster.node.integrity")

#: bytes hashed per read
HASH_CHUNK = 1 << 20
QUARANTINE = "quarantine"
#: suffix of a quarantined copy whose blob was repaired (its mtime: when)
REPAIRED = ".repaired"
#: default keep time of a repaired blob's quarantined copy (seconds)
QUARANTINE_KEEP = 7 * 24 * 3600.0


class BlobCorrupt(StorageError):
    """A stored blob's bytes do not hash to its name; it was quarantined and a repair queued."""

    def __init__(self, sha256, actual, node_id=""):
        super().__init__("checksum mismatch: blob %s%s is corrupt (its bytes hash to %s); "
                         "quarantined, repair scheduled"
                         % (sha256, " on " + node_id if node_id else "", actual[:16] + "..."))
        self.sha256 = sha256
        self.actual = actual


def hash_open_file(f, limiter=None, stop=None):
    """Hex SHA-256 of the whole open file ``f`` (by ``pread``: its position is unchanged).

    ``limiter.consume(n)`` is charged per piece (the scrubber's rate limit);
    ``stop`` (an Event) aborts with None when set.
    """
    fd = f.fileno()
    h = hashlib.sha256()
    offset = 0
    while True:
        if stop is not None and stop.is_set():
            return None
        data = os.pread(fd, HASH_CHUNK, offset)
        if not data:
            return h.hexdigest()
        h.update(data)
        offset += len(data)
        if limiter is not None:
            limiter.consume(len(data))


def file_key(sha256, f):
    """The LRU key of an open blob: content address + file identity + mtime."""
    st = os.fstat(f.fileno())
    return (sha256, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _Flight:
    """One hash in progress that other readers of the same file wait for."""

    def __init__(self):
        self.done = threading.Event()
        self.ok = None
        self.actual = None


class Integrity:
    """Verification, quarantine and repair of one node's blobs.  Thread-safe.

    ``node`` is the :class:`~cluster.node.state.NodeState` (its ``store``,
    ``ring`` and ``id``); ``client`` a :class:`~cluster.peers.PeerClient` for repairs.
    """

    def __init__(self, node, client=None, cache_entries=65536, read_verify_max=256 << 20,
                 quarantine_keep=None, quarantine_max_bytes=None):
        self.node = node
        # retention of quarantine/ (see the module doc); default: the node's config
        cfg = node.config
        self.quarantine_keep = (getattr(cfg, "quarantine_keep", QUARANTINE_KEEP)
                                if quarantine_keep is None else quarantine_keep)
        self.quarantine_max_bytes = (getattr(cfg, "quarantine_max_bytes", 0)
                                     if quarantine_max_bytes is None else quarantine_max_bytes)
        self.read_verify_max = read_verify_max
        self._later = set()          # large blobs queued for a background check
        self._background = None      # its single thread, made on first use
        self._closing = threading.Event()
        self.client = client
        self.quarantine_dir = os.path.join(node.config.dir, QUARANTINE)
        os.makedirs(self.quarantine_dir, exist_ok=True)
        self._cache = OrderedDict()
        self._cache_entries = cache_entries
        self._flights = {}
        self._lock = threading.Lock()
        self._pending = {}            # sha256 -> name hint (or None), waiting for repair
        self.wake = threading.Event() # set when a repair is queued (the repair task waits on it)
        self.counters = {"verified": 0, "cache_hits": 0, "corrupt": 0, "quarantined": 0,
                         "repaired": 0, "repair_failed": 0, "verified_after_serving": 0,
                         "quarantine_removed": 0, "trusted_on_write": 0}

    @property
    def store(self):
        return self.node.store

    # ------------------------------------------------------------------ verification

    def _remember(self, key):
        with self._lock:
            self._cache[key] = True
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)

    def check(self, sha256, f, force=False, limiter=None, stop=None, name=None):
        """Verify the open blob ``f`` of ``sha256`` (blocking); raise :class:`BlobCorrupt` if bad.

        What the read paths call before serving ``f``.  Returns True when the
        file was hashed now, False when the LRU vouched for it (or ``stop`` was
        set), or when the blob is above ``read_verify_max``: then it is checked
        in the background and served meanwhile.  ``force`` (the scrubber, repairs)
        always hashes, ignoring the LRU and the size limit.
        """
        if not force and self.read_verify_max and os.fstat(f.fileno()).st_size > self.read_verify_max:
            key = file_key(sha256, f)
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    self.counters["cache_hits"] += 1
                    return False
                if sha256 in self._later:
                    return False
                self._later.add(sha256)
                if self._background is None:
                    self._background = ThreadPoolExecutor(1, thread_name_prefix="node-verify")
            self._background.submit(self._check_later, sha256, name)
            return False
        return self._verify(sha256, f, force, limiter, stop, name)

    check_read = check

    def trust_written(self, sha256, written, size):
        """Count the blob of ``sha256`` as verified when it is the file this node just wrote.

        ``written`` is the ``os.stat`` of the upload's temporary file, taken before the
        commit renamed it into place, and ``size`` the number of bytes it hashed.  Its bytes were hashed as they arrived and fsynced,
        and a read check right now would hash the same pages from the page cache, so it
        could not find anything the write did not; the LRU entry is keyed like any other
        (inode, size, mtime), so a blob replaced later is hashed again.  A blob that was
        already present (an upload of known content) is not vouched for: its file is not
        the one written.
        """
        try:
            st = os.stat(self.store.blob_path(sha256))
        except OSError:
            return False
        if (st.st_dev, st.st_ino, st.st_size) != (written.st_dev, written.st_ino, size):
            return False
        self._remember((sha256, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        with self._lock:
            self.counters["trusted_on_write"] += 1
        return True

    def _check_later(self, sha256, name):
        try:
            with self.store.open_blob(sha256) as f:
                if self._verify(sha256, f, False, None, self._closing, name):
                    with self._lock:
                        self.counters["verified_after_serving"] += 1
        except (BlobCorrupt, OSError, StorageError):
            pass   # quarantined and queued for repair by check(), or gone meanwhile
        finally:
            with self._lock:
                self._later.discard(sha256)

    def close(self):
        """Stop a background check under way (node shutdown)."""
        self._closing.set()
        if self._background is not None:
            self._background.shutdown(wait=False, cancel_futures=True)

    def _verify(self, sha256, f, force, limiter, stop, name):
        """:meth:`check` without the size limit: hash now (unless the LRU vouches and not ``force``)."""
        key = file_key(sha256, f)
        with self._lock:
            if not force and key in self._cache:
                self._cache.move_to_end(key)
                self.counters["cache_hits"] += 1
                return False
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.ok is None:          # the leader was stopped: hash it ourselves
                return self._verify(sha256, f, force, limiter, stop, name)
        else:
            try:
                actual = hash_open_file(f, limiter, stop)
                flight.actual = actual
                flight.ok = None if actual is None else actual == sha256
            finally:
                with self._lock:
                    self._flights.pop(key, None)
                flight.done.set()
            if flight.ok is None:
                return False
            with self._lock:
                self.counters["verified"] += 1
            if flight.ok:
                self._remember(key)
            else:
                self._found_corrupt(sha256, key, flight.actual, name)
        if not flight.ok:
            raise BlobCorrupt(sha256, flight.actual, self.node.id)
        return leader

    def _found_corrupt(self, sha256, key, actual, name):
        log.error("checksum mismatch: blob %s hashes to %s; quarantining it", sha256, actual)
        with self._lock:
            self.counters["corrupt"] += 1
        dest = os.path.join(self.quarantine_dir, "%s.%d" % (sha256, time.time_ns()))
        try:
            if self.store.quarantine_blob(sha256, dest, expect=(key[1], key[2])):
                with self._lock:
                    self.counters["quarantined"] += 1
        except OSError as e:
            log.error("could not quarantine blob %s: %s", sha256, e)
        cache = getattr(self.node, "read_cache", None)
        if cache is not None:
            cache.invalidate(None)  # rare; any name may use this blob (filetracker/storage/readcache.py)
        self.schedule_repair(sha256, name)

    def schedule_repair(self, sha256, name=None):
        """Queue ``sha256`` for :meth:`repair_pending` (``name``: a record using it, to find owners)."""
        with self._lock:
            if name is not None or sha256 not in self._pending:
                self._pending[sha256] = name
        self.wake.set()

    def pending(self):
        with self._lock:
            return len(self._pending)

    # ------------------------------------------------------------------ repair

    def _sources(self, name):
        """Peer URLs to fetch from: the owners of ``name``'s partition first, then every other member."""
        ring = self.node.ring
        urls = []
        if name is not None:
            urls = [n.url for n in ring.partition_owners(self.node.partition_of(name))]
        urls += [n.url for n in ring.nodes]
        seen, out = set(), []
        for u in urls:
            if u != self.node.id and u not in seen:
                seen.add(u)
                out.append(u)
        return out

    def repair_one(self, sha256, name=None):
        """Fetch ``sha256`` from a peer, check it, install it; True when the blob is good here now."""
        store = self.store
        if store.has_blob(sha256):
            try:
                with store.open_blob(sha256) as f:
                    self.check(sha256, f, force=True)
                self._mark_repaired(sha256)
                return True          # restored meanwhile (a replica pushed it, a new upload)
            except (BlobCorrupt, FileNotFoundError):
                pass                 # quarantined by the check: fetch it
        if self.client is None:
            return False
        for url in self._sources(name):
            try:
                upload = store.begin_upload()
            except (StorageError, OSError) as e:   # the reserve, a full disk, no fds: stays queued
                log.warning("repair of %s: no temporary file for it: %s", sha256, e)
                return False
            try:
                self.client.fetch_blob(url, sha256, upload.write)
                upload.finish()
                if upload.sha256 != sha256:
                    log.warning("repair of %s: the copy from %s is corrupt too", sha256, url)
                    continue
                store.restore_blob(upload.path, sha256)
                log.info("repaired blob %s from %s", sha256, url)
                self._mark_repaired(sha256)
                return True
            except PeerError as e:
                log.debug("repair of %s: %s has no good copy: %s", sha256, url, e)
            except (StorageError, OSError) as e:
                log.warning("repair of %s from %s failed: %s", sha256, url, e)
            finally:
                upload.abort()       # no-op when restore_blob took the file
        return False

    def repair_pending(self):
        """Repair every queued blob once; ``{"repaired", "failed", "pending"}`` (failures stay queued)."""
        with self._lock:
            work = dict(self._pending)
            self.wake.clear()
        repaired = failed = 0
        for sha, name in work.items():
            if not self.store.is_referenced(sha):
                # deleted or replaced meanwhile: nothing needs the blob, and no peer may still
                # have it (a repair tried every pass, for ever); its quarantined copy may go
                self._drop_unneeded(sha, name)
                continue
            ok = self.repair_one(sha, name)
            with self._lock:
                if ok:
                    if self._pending.get(sha, name) == name:
                        self._pending.pop(sha, None)
                    self.counters["repaired"] += 1
                else:
                    self.counters["repair_failed"] += 1
            repaired += ok
            failed += not ok
        return {"repaired": repaired, "failed": failed, "pending": self.pending()}

    def _drop_unneeded(self, sha256, name):
        """Forget the queued repair of ``sha256``, which no live record references any more,
        and let its quarantined copies be pruned like repaired ones."""
        with self._lock:
            if self._pending.get(sha256, name) == name:
                self._pending.pop(sha256, None)
        self._mark_repaired(sha256)
        log.info("repair of %s dropped: no record uses the blob any more", sha256)

    def requeue_quarantined(self):
        """Queue a repair for every quarantined blob that is still absent (at start: the queue of
        repairs lives in memory, so a node that died between a quarantine and its repair resumes
        here).  Returns the count queued."""
        try:
            names = os.listdir(self.quarantine_dir)
        except OSError:
            return 0
        queued = 0
        for sha in sorted({n.split(".", 1)[0] for n in names if not n.endswith(REPAIRED)}):
            if is_sha256(sha) and not self.store.has_blob(sha):
                self.schedule_repair(sha)
                queued += 1
        return queued

    def quarantined_files(self):
        try:
            return len(os.listdir(self.quarantine_dir))
        except OSError:
            return 0

    def quarantine_usage(self):
        """``(files, bytes)`` held in ``quarantine/`` now."""
        files = size = 0
        try:
            with os.scandir(self.quarantine_dir) as it:
                for entry in it:
                    try:
                        size += entry.stat(follow_symlinks=False).st_size
                        files += 1
                    except OSError:
                        pass         # removed meanwhile
        except OSError:
            pass
        return files, size

    # ------------------------------------------------------------------ retention

    def _mark_repaired(self, sha256, names=None):
        """Tag the quarantined copies of ``sha256`` as repaired; their keep time starts now."""
        if names is None:
            try:
                names = os.listdir(self.quarantine_dir)
            except OSError:
                return
        for n in names:
            if n.split(".", 1)[0] != sha256 or n.endswith(REPAIRED):
                continue
            path = os.path.join(self.quarantine_dir, n)
            try:
                os.utime(path)       # the mtime now says when the repair happened
                os.rename(path, path + REPAIRED)
            except FileNotFoundError:
                pass                 # marked by a concurrent pass
            except OSError as e:
                log.warning("could not mark quarantined %s as repaired: %s", n, e)

    def _remove_quarantined(self, path):
        """Delete one quarantined copy; True if this call removed it."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warning("could not remove quarantined %s: %s", path, e)
            return False
        with self._lock:
            self.counters["quarantine_removed"] += 1
        return True

    def prune_quarantine(self, now=None):
        """Apply the retention of ``quarantine/`` once (blocking); the count of copies removed.

        A copy whose blob is present again and not queued for repair is marked
        repaired first (repaired before a restart, or re-uploaded).  Repaired
        copies older than ``quarantine_keep`` go; then, above
        ``quarantine_max_bytes``, the oldest repaired copies go.  Unrepaired
        copies are always kept.
        """
        now = time.time() if now is None else now
        try:
            names = os.listdir(self.quarantine_dir)
        except OSError:
            return 0
        with self._lock:
            pending = set(self._pending)
        unmarked = {n.split(".", 1)[0] for n in names if not n.endswith(REPAIRED)}
        for sha in unmarked:
            if is_sha256(sha) and sha not in pending and self.store.has_blob(sha):
                self._mark_repaired(sha, names)
        removed, repaired, total = 0, [], 0
        try:
            with os.scandir(self.quarantine_dir) as it:
                entries = list(it)
        except OSError:
            return 0
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.name.endswith(REPAIRED) and now - st.st_mtime >= self.quarantine_keep:
                removed += self._remove_quarantined(entry.path)
                continue
            total += st.st_size
            if entry.name.endswith(REPAIRED):
                repaired.append((st.st_mtime, entry.path, st.st_size))
        if self.quarantine_max_bytes and total > self.quarantine_max_bytes:
            for _, path, size in sorted(repaired):
                if total <= self.quarantine_max_bytes:
                    break
                removed += self._remove_quarantined(path)
                total -= size
        if removed:
            log.info("quarantine: removed %d repaired copies", removed)
        return removed

    def summary(self):
        """Counters for status/verify answers."""
        with self._lock:
            out = dict(self.counters)
            out["pending_repair"] = len(self._pending)
        out["quarantine_files"], out["quarantine_bytes"] = self.quarantine_usage()
        return out
