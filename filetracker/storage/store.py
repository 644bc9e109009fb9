"""The server-side object store: content-addressed blobs + one record per name.

Layout under ``dir``::

    blobs/<sha[:2]>/<sha>   plain bytes, named by their SHA-256 (stored once)
    retired/<sha>           blobs no record references any more, kept readable for
                            ``keep_replaced`` seconds (cluster nodes; see retired.py)
    tmp/                    uploads in progress, named ``<pid>-<random>`` (cleared when the store
                            opens; a dead worker's by :func:`clear_uploads_of`)
    records.sqlite3         WAL, synchronous=FULL: the table ``records``
    store.lock              the store lock (flock), see below
    service.lock            held for life by the one server or node serving the folder (not by
                            this class: see filetracker.server.main.lock_data_folder)

Crash safety by construction:

* a blob becomes visible only by ``rename`` of a complete, fsynced temp file
  (followed by an fsync of its folder), so a blob path never holds partial data;
* a record is committed (SQLite, synchronous=FULL) only after its blob is in
  place, so a record never points to a missing blob;
* a blob is unlinked only *after* the commit that stopped referencing it, so a
  crash in between leaves an orphan blob (harmless, removed by
  :meth:`ObjectStore.collect_garbage`, which the server runs after it starts and a node
  in its reclaim pass), never a dangling record.

The *store lock* (a thread lock plus ``flock`` on ``store.lock``, so several
processes may share one folder) serialises every step that puts a blob in place,
commits a record or unlinks a blob: a blob is never unlinked while a record
that references it is being committed.  Reads take no lock.

The class is synchronous and thread-safe; Tornado code calls it in an executor.
"""

import fcntl
import hashlib
import os
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from filetracker.names import check_folder
from filetracker.records import Record, merge
from filetracker.storage.errors import (
    BlobMissing,
    ChecksumMismatch,
    SizeMismatch,
    StorageError,
    StoreFull,
)
from filetracker.storage.retired import RetiredBlobs
from filetracker.storage.upload import Upload, discard, is_disk_full

#: Rows fetched per query by the iterators (keyset pagination keeps memory flat).
_BATCH = 1000
_COLUMNS = "name, version, sha256, size, deleted"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    name TEXT PRIMARY KEY,
    partition INTEGER NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_partition ON records (partition);
CREATE INDEX IF NOT EXISTS records_sha256 ON records (sha256);
"""


def _row_to_record(row):
    return Record(name=row[0], version=row[1], sha256=row[2], size=row[3], deleted=bool(row[4]))


def fsync_dir(path):
    """fsync a directory so a rename/unlink/creation in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path, chunk=1 << 20):
    """(hex sha256, size) of a file's content."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                break
            h.update(data)
            size += len(data)
    return h.hexdigest(), size


def _disk_error(e):
    """``e``, or StoreFull when it is an OSError meaning the disk is full."""
    if is_disk_full(e):
        return StoreFull("no space left on the store's disk")
    return e


class _Job:
    """One record waiting in the group commit queue."""

    __slots__ = ("record", "src_path", "done", "result", "error")

    def __init__(self, record, src_path):
        self.record = record
        self.src_path = src_path
        self.done = False
        self.result = None
        self.error = None

    def finish(self, result):
        self.result = result
        self.done = True

    def fail(self, error):
        self.error = error
        self.done = True


def is_sha256(text):
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@dataclass
class VerifyReport:
    """Result of :meth:`ObjectStore.verify`: names whose blob is missing or wrong."""

    checked: int = 0
    missing: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)
    repaired: int = 0

    @property
    def ok(self):
        return not self.missing and not self.corrupt


def clear_uploads_of(dir, pid):
    """Remove the temporary files of uploads that process ``pid`` (now dead) left in the store
    folder ``dir``: the number removed.  A ``--workers`` parent calls it for a worker that died,
    whose files would otherwise stay until the next full start (which clears ``tmp/``)."""
    tmp_dir = os.path.join(os.path.abspath(dir), "tmp")
    prefix = "%d-" % pid
    try:
        leftovers = [base for base in os.listdir(tmp_dir) if base.startswith(prefix)]
    except FileNotFoundError:
        return 0
    for base in leftovers:
        discard(os.path.join(tmp_dir, base))
    return len(leftovers)


class ObjectStore:
    """Blobs + records in one folder.  See the module docstring for the guarantees.

    ``partition_of(name) -> int`` is stored with every record (default: 0);
    cluster nodes pass the ring's function.  ``clear_tmp`` removes leftovers
    of uploads interrupted by a crash (pass False in worker processes that
    share a folder whose parent already cleared it).

    ``keep_replaced`` seconds (0: none) a blob that no record references any more
    stays readable through :meth:`open_blob` before it is unlinked, unless the disk
    has less than ``keep_min_free_bytes`` free (:mod:`filetracker.storage.retired`).
    """

    def __init__(self, dir, partition_of=None, clear_tmp=True, keep_replaced=0.0, keep_min_free_bytes=0):
        self.dir = os.path.abspath(dir)
        self.partition_of = partition_of or (lambda name: 0)
        self.blobs_dir = os.path.join(self.dir, "blobs")
        self.tmp_dir = os.path.join(self.dir, "tmp")
        self.db_path = os.path.join(self.dir, "records.sqlite3")
        os.makedirs(self.blobs_dir, exist_ok=True)
        if clear_tmp:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.retired = None
        if keep_replaced > 0:
            self.retired = RetiredBlobs(os.path.join(self.dir, "retired"), keep_replaced, keep_min_free_bytes)
        elif clear_tmp:
            # kept by an earlier run with keep_replaced on: nothing would ever remove them now
            shutil.rmtree(os.path.join(self.dir, "retired"), ignore_errors=True)
        self._thread_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending = []  # group commit queue (see _merge_in)
        self._lock_fd = os.open(os.path.join(self.dir, "store.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        self._local = threading.local()
        self._conns = []
        self._conns_lock = threading.Lock()
        self._closed = False
        #: called with a name right after :meth:`verify` (repair) dropped its record; a wrapper
        #: that caches records (cluster/node/state.py) sets it, since a repair pass is long
        self.on_record_dropped = None
        with self._locked():
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    # ------------------------------------------------------------------ plumbing

    def _conn(self):
        """This thread's SQLite connection (autocommit; explicit transactions)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StorageError("the store is closed")
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _locked(self):
        """The store lock: threads of this process, then other processes (flock)."""
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self):
        """A write transaction; call only with the store lock held."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._db_error(e) from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass
            raise self._db_error(e) from None

    @staticmethod
    def _db_error(e):
        if "full" in str(e).lower():
            return StoreFull("no space left on the store's disk (records database)")
        return StorageError("records database error: %s" % e)

    def _commit_error(self, e):
        """What the jobs of a failed group commit get for ``e``: StoreFull for a full disk or
        database, StorageError for another database error, else ``e`` itself."""
        return self._db_error(e) if isinstance(e, sqlite3.Error) else _disk_error(e)

    def close(self):
        """Close every database connection and the lock file."""
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ blobs

    def blob_path(self, sha256):
        """Path of the blob with this content address (whether present or not)."""
        if not is_sha256(sha256):
            raise StorageError("invalid sha256: %r" % (sha256,))
        return os.path.join(self.blobs_dir, sha256[:2], sha256)

    def has_blob(self, sha256):
        return is_sha256(sha256) and os.path.isfile(self.blob_path(sha256))

    def open_blob(self, sha256):
        """Open a blob for reading (raises FileNotFoundError when absent).

        A blob replaced a moment ago is still found while it is retired (see ``keep_replaced``).
        """
        try:
            return open(self.blob_path(sha256), "rb")
        except FileNotFoundError:
            if self.retired is None:
                raise
        return self.retired.open(sha256)

    def open_record(self, name):
        """``(record, open file)`` of the live record of ``name``, or None.

        Retries when the blob vanished between reading the record and opening
        it (a concurrent replace); an open file stays readable after an unlink.
        """
        for _ in range(5):
            record = self.get_record(name)
            if record is None or record.deleted:
                return None
            try:
                return record, self.open_blob(record.sha256)
            except FileNotFoundError:
                continue
        return None

    def quarantine_blob(self, sha256, dest, expect=None):
        """Move the blob ``sha256`` out of ``blobs/`` to ``dest`` (same filesystem), under the store lock.

        ``expect`` = ``(st_dev, st_ino)``: move only if the blob is still that file
        (not a good copy installed meanwhile).  True if moved.  Records are left
        as they are.  (Hook for ``cluster/node/integrity.py``: bitrot quarantine.)
        """
        path = self.blob_path(sha256)
        with self._locked():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return False
            if expect is not None and (st.st_dev, st.st_ino) != tuple(expect):
                return False
            os.rename(path, dest)
            fsync_dir(os.path.dirname(path))
            return True

    def restore_blob(self, src_path, sha256):
        """Install a complete, fsynced file the caller verified as the blob ``sha256`` (replacing one
        present).  (Hook for ``cluster/node/integrity.py``: repair of a quarantined blob.)"""
        with self._locked():
            self._place_blob(src_path, sha256)

    def _place_blob(self, src_path, sha256, dirs=None):
        """Rename a complete, fsynced file into blobs/ (store lock held).

        A blob already there (the same content by name) is replaced, not kept: it may be
        one whose folder entry was never made durable (a batch that failed at its folder
        fsync left it) or one gone bad on the disk, while the source was just hashed and
        fsynced.  With ``dirs`` (a set) the folders to fsync are added to it instead of
        synced here (the group commit syncs them before its transaction).
        """
        dest = self.blob_path(sha256)
        sub = os.path.dirname(dest)
        if not os.path.isdir(sub):
            os.makedirs(sub, exist_ok=True)
            fsync_dir(self.blobs_dir)
        os.rename(src_path, dest)
        if dirs is None:
            fsync_dir(sub)
        else:
            dirs.add(sub)

    def is_referenced(self, sha256):
        """True when a live record (not a tombstone) names the blob ``sha256``."""
        return self._referenced(self._conn(), sha256)

    def _referenced(self, conn, sha256):
        row = conn.execute("SELECT 1 FROM records WHERE sha256 = ? AND deleted = 0 LIMIT 1",
                           (sha256,)).fetchone()
        return row is not None

    def _unlink_unreferenced(self, sha256s):
        """Unlink (or retire) each blob no live record references (store lock held, after commit)."""
        conn = self._conn()
        for sha in set(sha256s):
            if is_sha256(sha) and not self._referenced(conn, sha):
                if self.retired is None:
                    discard(self.blob_path(sha))
                else:
                    self.retired.retire(self.blob_path(sha), sha)

    # ------------------------------------------------------------------ writes

    def begin_upload(self):
        """A new :class:`Upload` (temporary file in ``tmp/``)."""
        try:
            # the writer's pid in the name: a worker that dies mid-upload leaves files its
            # parent can tell apart from the live workers' (clear_uploads_of)
            return Upload(os.path.join(self.tmp_dir, "%d-%s" % (os.getpid(), uuid.uuid4().hex)))
        except OSError as e:
            if is_disk_full(e):
                raise StoreFull("no space left on the store's disk") from None
            raise

    def commit_upload(self, upload, name, version, expected_sha256=None, expected_size=None):
        """Store ``upload`` as ``name`` at ``version``; return ``(winner, applied)``.

        Raises :class:`ChecksumMismatch` / :class:`SizeMismatch` (nothing stored,
        upload removed) or :class:`StoreFull`.  When the new record loses the
        merge nothing changes and the upload is dropped.
        """
        try:
            record = self._finished_record(upload, name, version, expected_sha256, expected_size)
            return self._merge_in(record, src_path=upload.path)
        finally:
            discard(upload.path)

    def commit_uploads(self, items):
        """Store many finished-to-be uploads in one group commit (one transaction, one WAL fsync).

        ``items`` is a list of ``(upload, record)``: the upload (open, or already
        finished: a caller holding many closes each as it goes) holds the content
        ``record`` announces (its name, version, SHA-256 and size are checked as
        :meth:`commit_upload` checks them).  Returns one entry per item, in order:
        ``(winner, applied)``, or the exception that item met
        (:class:`ChecksumMismatch`, :class:`SizeMismatch`, :class:`StoreFull`, ...);
        one item failing never fails the others.  Every upload file is gone afterwards.
        Durability is that of :meth:`commit_upload` for each item.
        """
        results = [None] * len(items)
        jobs = []
        try:
            for i, (upload, want) in enumerate(items):
                try:
                    record = self._finished_record(upload, want.name, want.version, want.sha256, want.size)
                except Exception as e:  # noqa: BLE001 - this item fails, the others go on
                    results[i] = _disk_error(e)
                    continue
                jobs.append((i, _Job(record, upload.path)))
            self._merge_jobs([job for _, job in jobs])
            for i, job in jobs:
                results[i] = job.error if job.error is not None else job.result
        finally:
            for upload, _ in items:
                discard(upload.path)
        return results

    @staticmethod
    def _finished_record(upload, name, version, expected_sha256, expected_size):
        """Finish (fsync) ``upload`` unless it is already, and return the data record of its
        content, checked against the announced checksum and size."""
        if not upload.finished:
            upload.finish()
        sha, size = upload.sha256, upload.size
        if expected_sha256 is not None and expected_sha256.lower() != sha:
            raise ChecksumMismatch("content SHA-256 %s does not match the announced %s"
                                   % (sha, expected_sha256))
        if expected_size is not None and int(expected_size) != size:
            raise SizeMismatch("content size %d does not match the announced %s" % (size, expected_size))
        return Record(name=name, version=int(version), sha256=sha, size=size, deleted=False)

    def put_record(self, record, blob_path=None):
        """Merge a data record; ``blob_path`` (a file of its content) is moved into blobs/.

        The file's SHA-256 and size are checked against the record first.
        With ``blob_path=None`` this is :meth:`apply_record`.
        """
        if blob_path is None:
            return self.apply_record(record)
        sha, size = hash_file(blob_path)
        if sha != record.sha256:
            raise ChecksumMismatch("blob SHA-256 %s does not match the record's %s" % (sha, record.sha256))
        if size != record.size:
            raise SizeMismatch("blob size %d does not match the record's %d" % (size, record.size))
        with open(blob_path, "rb") as f:
            os.fsync(f.fileno())
        return self._merge_in(record, src_path=blob_path)

    def apply_record(self, record):
        """Merge a record whose blob is already here (or a tombstone): ``(winner, applied)``.

        Raises :class:`BlobMissing` when a winning data record's blob is absent.
        """
        return self._merge_in(record, src_path=None)

    def delete(self, name, version):
        """Merge a tombstone of ``name`` at ``version``: ``(winner, applied)``."""
        return self._merge_in(Record.tombstone(name, int(version)), src_path=None)

    def _merge_in(self, record, src_path):
        """Merge one record (its blob file ``src_path`` moved into place if it wins).

        Group commit: concurrent callers queue their jobs; whoever holds the
        store lock commits every queued job in one transaction (one WAL fsync
        for all of them).  A caller returns only after the transaction holding
        its record committed and its blob's folder was fsynced, so durability
        is exactly that of one transaction per record.
        """
        job = _Job(record, src_path)
        self._merge_jobs([job])
        if job.error is not None:
            raise job.error
        return job.result

    def _merge_jobs(self, jobs):
        """Queue ``jobs`` together and return once every one of them is done (see :meth:`_merge_in`)."""
        with self._pending_lock:
            self._pending.extend(jobs)
        for job in jobs:
            while not job.done:
                with self._locked():
                    if job.done:
                        break
                    with self._pending_lock:
                        batch, self._pending = self._pending, []
                    try:
                        self._commit_batch(batch)
                    except BaseException as e:
                        # every job of the batch must end, or their callers wait for ever
                        err = self._commit_error(e)
                        for other in batch:
                            if not other.done:
                                other.fail(err if isinstance(e, Exception) else StorageError("commit interrupted"))
                        if not isinstance(e, Exception):
                            raise

    def _commit_batch(self, batch):
        """Merge, place and commit ``batch`` (store lock held); every job gets its result or error.

        A job that loses to a record already committed is answered at once; one that loses to
        a record of this batch only once that record is committed (or fails with it): "a newer
        version is stored" must never be said of a record that then fails to commit.
        """
        conn = self._conn()
        current = {}     # name -> (the record that wins so far, whether it is this batch's: uncommitted)
        applied = []     # jobs whose record wins, in order
        losers = []      # (job, winner) of jobs that lost to a record of this batch
        dirs = set()
        drop = []        # blobs that may be unreferenced after the commit
        for job in batch:
            record = job.record
            stored, ours = current[record.name] if record.name in current else (self._get(conn, record.name), False)
            if merge(stored, record) is not record:
                if ours:
                    losers.append((job, stored))
                else:
                    job.finish((stored, False))
                current[record.name] = (stored, ours)
                continue
            try:
                if not record.deleted:
                    if job.src_path is not None:
                        self._place_blob(job.src_path, record.sha256, dirs)
                    elif not self.has_blob(record.sha256):
                        raise BlobMissing("blob %s of %s is not present" % (record.sha256, record.name))
                    else:
                        # placed by an earlier write whose commit may have failed at its folder's
                        # fsync: make the entry durable before a record references it
                        dirs.add(os.path.dirname(self.blob_path(record.sha256)))
            except Exception as e:  # noqa: BLE001 - this job fails, the others go on
                job.fail(_disk_error(e))
                continue
            current[record.name] = (record, True)
            applied.append(job)
            if stored is not None and not stored.deleted and stored.sha256 != record.sha256:
                drop.append(stored.sha256)
        if not applied:
            return
        try:
            for d in sorted(dirs):
                fsync_dir(d)
            with self._transaction() as tx:
                now = time.time()
                tx.executemany(
                    "INSERT OR REPLACE INTO records (name, partition, version, sha256, size, deleted,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(j.record.name, int(self.partition_of(j.record.name)), j.record.version, j.record.sha256,
                      j.record.size, int(j.record.deleted), now) for j in applied])
        except Exception as e:  # noqa: BLE001 - nothing of the batch is committed
            err = self._commit_error(e)
            for job in applied + [job for job, _ in losers]:
                job.fail(err)
            return
        for job in applied:
            job.finish((job.record, True))
        for job, winner in losers:
            job.finish((winner, False))
        if drop:
            self._unlink_unreferenced(drop)

    def forget(self, name, record):
        """Drop the record of ``name`` (no tombstone) if it still equals ``record``.

        Used after a partition was handed to its owners.  Returns True if dropped.
        """
        with self._locked():
            conn = self._conn()
            stored = self._get(conn, name)
            if stored is None or stored != record:
                return False
            with self._transaction() as tx:
                tx.execute("DELETE FROM records WHERE name = ?", (name,))
            if not stored.deleted:
                self._unlink_unreferenced([stored.sha256])
            return True

    def reclaim_tombstones(self, older_than_seconds):
        """Remove tombstones written locally more than ``older_than_seconds`` ago whose version
        is that old too; return the count.

        By the version too, because that is the age by which replicas stop copying a tombstone
        to a replica without a record of the name (:func:`filetracker.records.worth_copying`):
        a tombstone of a version in the future, or farther ahead of its write than the TTL, was
        reclaimed here and copied straight back by a replica, with a fresh local age, again and
        again.  Until its version is that old it still refuses older uploads, as it should."""
        cutoff = time.time() - older_than_seconds
        with self._locked(), self._transaction() as tx:
            cur = tx.execute("DELETE FROM records WHERE deleted = 1 AND updated_at < ? AND version < ?",
                             (cutoff, cutoff))
            return cur.rowcount

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _get(conn, name):
        row = conn.execute("SELECT %s FROM records WHERE name = ?" % _COLUMNS, (name,)).fetchone()
        return None if row is None else _row_to_record(row)

    def get_record(self, name):
        """The record of ``name`` (a tombstone included) or None."""
        return self._get(self._conn(), name)

    def _paged(self, where, params):
        """Records matching ``where``, in name order, fetched in batches (no open cursor kept)."""
        last = None
        while True:
            cond = where + ("" if last is None else " AND name > ?")
            args = tuple(params) + (() if last is None else (last,))
            rows = self._conn().execute(
                "SELECT %s FROM records WHERE %s ORDER BY name LIMIT %d" % (_COLUMNS, cond, _BATCH),
                args).fetchall()
            for row in rows:
                yield _row_to_record(row)
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    def iter_folder(self, folder, max_version=None, include_deleted=False):
        """Records under ``folder`` (recursively) with version <= ``max_version``, by name."""
        folder = check_folder(folder)
        prefix = folder if folder.endswith("/") else folder + "/"
        # Names under prefix "/a/" sort in ["/a/", "/a0"): '0' follows '/'.
        upper = prefix[:-1] + "0"
        where = "name >= ? AND name < ?"
        params = [prefix, upper]
        if max_version is not None:
            where += " AND version <= ?"
            params.append(int(max_version))
        if not include_deleted:
            where += " AND deleted = 0"
        return self._paged(where, params)

    def list_names(self, folder, max_version=None):
        """Full names of the live records under ``folder`` with version <= ``max_version``."""
        return (r.name for r in self.iter_folder(folder, max_version))

    def iter_records(self, partition=None):
        """Every record (tombstones included), optionally of one partition, by name."""
        if partition is None:
            return self._paged("1", [])
        return self._paged("partition = ?", [int(partition)])

    def count_records(self, partition):
        """How many records (tombstones included) ``partition`` holds (an index range count)."""
        return self._conn().execute("SELECT COUNT(*) FROM records WHERE partition = ?",
                                    (int(partition),)).fetchone()[0]

    def partitions_holding(self, candidates):
        """Those of ``candidates`` that hold at least one record, in the order given: one index
        probe each (about 5 us), so asking for a node's foreign partitions costs the same
        whatever the store holds, where :meth:`partitions` scans the whole index (35 ms per
        million records)."""
        conn = self._conn()
        probe = "SELECT 1 FROM records WHERE partition = ? LIMIT 1"
        return [p for p in candidates if conn.execute(probe, (int(p),)).fetchone() is not None]

    def partitions(self):
        """The sorted list of partitions that hold at least one record."""
        rows = self._conn().execute("SELECT DISTINCT partition FROM records ORDER BY partition").fetchall()
        return [r[0] for r in rows]

    def partition_digest(self, partition):
        """Hex SHA-256 over the partition's records in name order.

        Each record contributes ``name \\0 version \\0 deleted(0|1) \\0 sha256 \\n``
        (UTF-8); an empty partition digests to SHA-256 of nothing.
        """
        h = hashlib.sha256()
        for r in self.iter_records(partition):
            h.update(("%s\0%d\0%d\0%s\n" % (r.name, r.version, int(r.deleted), r.sha256)).encode("utf-8"))
        return h.hexdigest()

    def stats(self):
        """``{"files", "bytes", "tombstones", "blobs", "free_bytes", "retired_files", "retired_bytes"}``.

        ``retired_*``: replaced blobs kept for reads under way (``keep_replaced``); disk
        that ``bytes`` does not count.
        """
        conn = self._conn()
        files, size = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE deleted = 0").fetchone()
        tombstones = conn.execute("SELECT COUNT(*) FROM records WHERE deleted = 1").fetchone()[0]
        blobs = conn.execute(
            "SELECT COUNT(DISTINCT sha256) FROM records WHERE deleted = 0").fetchone()[0]
        st = os.statvfs(self.dir)
        retired = self.retired.stats() if self.retired is not None else {"files": 0, "bytes": 0}
        return {"files": files, "bytes": size, "tombstones": tombstones, "blobs": blobs,
                "free_bytes": st.f_bavail * st.f_frsize,
                "retired_files": retired["files"], "retired_bytes": retired["bytes"]}

    # ------------------------------------------------------------------ maintenance

    def verify(self, repair=False):
        """Check every live record against its blob (present, size, SHA-256).

        With ``repair=True`` a record whose blob is missing or wrong is dropped
        (so the name reads as absent, and a cluster's anti-entropy can refetch
        it) and a corrupt blob is removed.  Returns a :class:`VerifyReport`.
        """
        report = VerifyReport()
        for record in list(self._paged("deleted = 0", [])):
            report.checked += 1
            path = self.blob_path(record.sha256)
            try:
                sha, size = hash_file(path)
            except FileNotFoundError:
                report.missing.append(record.name)
                bad = False
            else:
                if sha == record.sha256 and size == record.size:
                    continue
                report.corrupt.append(record.name)
                bad = sha != record.sha256
            if repair and self._repair(record, drop_blob=bad):
                report.repaired += 1
        return report

    def _repair(self, record, drop_blob):
        with self._locked():
            conn = self._conn()
            if self._get(conn, record.name) != record:
                return False
            with self._transaction() as tx:
                tx.execute("DELETE FROM records WHERE name = ?", (record.name,))
            if self.on_record_dropped is not None:
                self.on_record_dropped(record.name)
            if drop_blob:
                discard(self.blob_path(record.sha256))
            else:
                self._unlink_unreferenced([record.sha256])
            return True

    def collect_garbage(self, should_stop=None):
        """Unlink blobs no live record references; return ``(count, bytes)`` freed.

        ``should_stop()`` is asked between blobs (a service shutting down ends a long pass).
        Something else than a file among the blobs (a folder) is left alone.
        """
        count = freed = 0
        for sub in sorted(os.listdir(self.blobs_dir)):
            subdir = os.path.join(self.blobs_dir, sub)
            if not os.path.isdir(subdir):
                continue
            for sha in os.listdir(subdir):
                if should_stop is not None and should_stop():
                    return count, freed
                path = os.path.join(subdir, sha)
                with self._locked():
                    if is_sha256(sha) and self._referenced(self._conn(), sha):
                        continue
                    try:
                        size = os.path.getsize(path)
                        os.unlink(path)
                    except (FileNotFoundError, IsADirectoryError, PermissionError):
                        continue
                count += 1
                freed += size
        return count, freed
