"""The FUSE operations: the store seen as a filesystem.

Semantics (issue 9; the user-facing version is filetracker/fuse/README.md):

- Folders are implied by names.  ``readdir`` uses the protocol's listing (one
  recursive listing also answers every folder below it); with the listing
  with details (our servers' extension) it also carries every file's size
  (logical) and mtime (the version), and an unknown path is resolved by one
  listing of it (a folder, or what the empty answer says the name is).
  Otherwise ``getattr`` uses HEAD, and ``readdir`` fetches the attributes of
  the folder's files with concurrent HEADs.  Either way the ``stat`` calls of
  ``ls -l`` that follow cost no request; everything is cached for
  ``attr_timeout`` seconds.
- ``open`` for reading resolves the current version and reads the versioned
  file from the Client's cache (downloading it there once; concurrent
  openers share that download).  Files larger than ``range_threshold`` that
  are not cached are read by HTTP ranges instead.
- Writes go to a staged local file and are uploaded whole (``put_file``) on
  ``flush``/``fsync``/``release``.  Nothing half-written is uploaded: a failed
  local write, an unlinked-while-open file, or a writer killed by a signal
  leaves the stored version alone.
- ``mkdir`` makes a folder that lives in the mount until a file is written
  under it.  ``rename`` of a file is put-new then delete-old (not atomic).
  ``chmod``/``chown``/``utimens`` succeed without effect (the store keeps no
  modes or owners, and versions are assigned at upload).  ``truncate`` works.
- Errors map to errno by :mod:`.errnos`.
"""

import collections
import errno
import functools
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from filetracker.errors import (
    FiletrackerError,
    InvalidNameError,
    NotFoundError,
    RemoteError,
    VersionConflictError,
)
from filetracker.fuse import tree
from filetracker.fuse.attrcache import TTLCache
from filetracker.fuse.errnos import FsError, errno_for
from filetracker.fuse.fastread import FUSE_CAP_SPLICE_WRITE, pin_thread_state, reply_fd
from filetracker.fuse.handles import CachedReader, RangedReader, WriteBuffer
from filetracker.fuse.proc import killed_by_signal
from filetracker.fuse.remote import StaleVersionError
from filetracker.fuse.singleflight import SingleFlight
from filetracker.names import check_name, check_path, split_name, versioned_name

try:  # the binding is optional at import time, so pure parts stay testable without libfuse
    import mfusepy as fuse
    Operations = fuse.Operations
except (ImportError, OSError):  # pragma: no cover - depends on the machine
    fuse = None
    Operations = object

logger = logging.getLogger("filetracker.fuse")

#: A cached file attribute: kind (tree.FILE / tree.DIR), size, version (int or None).
Attr = collections.namedtuple("Attr", ["kind", "size", "version"])
_NEGATIVE = Attr(None, 0, None)

#: readdir fetches attributes of at most this many files (beyond: on demand).
MAX_PREFETCH = 5000
#: Uploads refused because of a newer delete are retried this often, one version higher each time.
UPLOAD_CONFLICT_RETRIES = 5
#: Names whose last written/deleted version the mount remembers.
MAX_FLOORS = 100_000
#: Largest read request the kernel sends (the ``max_read`` mount option).  The
#: kernel's limit is 1 MiB, but a spliced reply must fit a pipe (1 MiB by
#: default, header included), so 512 KiB keeps replies zero-copy; the
#: read-ahead window (:data:`READ_AHEAD_KIB`) keeps several in flight.
MAX_READ = 512 * 1024


def operation(fn):
    """Turn every failure of a FUSE operation into a clean errno.

    Expected errors (``FsError``, filetracker errors) map by :func:`errno_for`;
    anything unexpected is logged with its traceback and becomes EIO.
    """

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        pin_thread_state()
        try:
            return fn(self, *args, **kwargs)
        except FsError:
            raise
        except FiletrackerError as e:
            err = errno_for(e)
            if err == errno.EIO:
                logger.warning("%s%r: %s", fn.__name__, args[:1], e)
            raise FsError(err, str(e)) from None
        except OSError as e:
            raise FsError(errno_for(e), str(e)) from None
        except Exception:
            logger.exception("unexpected error in %s%r", fn.__name__, args[:1])
            raise FsError(errno.EIO) from None

    return wrapper


def _fh_of(fi):
    """The handle id from a raw ``fuse_file_info`` (or None)."""
    return fi.fh if fi is not None else None


class FiletrackerFS(Operations):
    """The operations object given to ``mfusepy.FUSE`` (with ``raw_fi=True``).

    ``client`` is a :class:`filetracker.client.Client` (cache + locks +
    put/delete); ``remote`` a :class:`filetracker.fuse.remote.Remote`.
    """

    use_ns = True

    def __init__(self, client, remote, attr_timeout=1.0, range_threshold=64 << 20,
                 read_only=False, on_ready=None, clock=time.monotonic, mountpoint=None,
                 direct_io_above=None):
        self.client = client
        self.mountpoint = mountpoint
        self.remote = remote
        self.store = client.local_store
        self.locks = client.lock_manager
        self.range_threshold = range_threshold
        #: Stored files larger than this are opened with direct I/O (None: never).
        self.direct_io_above = direct_io_above
        self.read_only = read_only
        self.on_ready = on_ready
        self.spool_dir = self.store.tmp_dir
        self.attrs = TTLCache(attr_timeout, clock)
        self.listings = TTLCache(attr_timeout, clock)
        self.clock = clock
        self.local_dirs = set()
        self.writers = {}  # path -> WriteBuffer open for writing
        self.ranged = {}  # (path, version) -> RangedReader shared by readers
        self.handles = {}  # fh -> handle object
        self.opened_versions = {}  # path -> version of the last open (kernel page cache validity)
        self._next_fh = 1
        self._lock = threading.RLock()
        self._downloads = SingleFlight()
        self._stats = SingleFlight()
        self._lists = SingleFlight()
        self._readahead_pool = None
        self.was_mounted = False
        #: path -> the highest version this mount wrote or deleted it at.  An
        #: upload must beat it: on equal versions a tombstone wins the merge.
        self.floors = collections.OrderedDict()
        self.uid, self.gid = os.getuid(), os.getgid()
        self.mount_time = int(time.time())

    # -- lifecycle -------------------------------------------------------------

    def init_with_config(self, conn, config):
        """libfuse's ``init`` with the connection: ask for spliced replies (see :mod:`.fastread`).

        ``max_read`` must repeat the mount option, or libfuse refuses to mount.
        """
        if conn is not None:
            if conn.capable & FUSE_CAP_SPLICE_WRITE:
                conn.want |= FUSE_CAP_SPLICE_WRITE
            conn.max_read = MAX_READ
        self.init("/")

    def init(self, path):
        # Threads start here, after a possible fork into the background.
        self.was_mounted = True
        if self.mountpoint:
            threading.Thread(target=tune_readahead, args=(self.mountpoint,), daemon=True,
                             name="ft-readahead-tune").start()
        self._readahead_pool = ThreadPoolExecutor(4, thread_name_prefix="ft-readahead")
        if self.on_ready is not None:
            self.on_ready()

    def destroy(self, path):
        if self._readahead_pool is not None:
            self._readahead_pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            handles = list({id(h): h for h in self.handles.values()}.values())
            self.handles.clear()
        for handle in handles:
            if self._close_handle(handle, final=True):
                self._finalize_writer(handle)

    # -- names and metadata ----------------------------------------------------

    @staticmethod
    def _check(path):
        try:
            return check_path(path)
        except InvalidNameError as e:
            raise FsError(errno.EINVAL, str(e)) from None

    def _require_writable(self):
        if self.read_only:
            raise FsError(errno.EROFS)

    def _list(self, folder):
        """Entries of ``folder`` from the (cached) recursive listing."""
        entries = self.listings.get(folder)
        if entries is not None:
            return entries

        def fetch():
            stamp = self.clock()  # entries are as old as the request, not its answer
            names, details, itself = self.remote.list_folder(folder)
            groups = tree.folder_entries(folder, names)
            for sub, sub_entries in groups.items():
                self.listings.put(sub, sub_entries, stamp=stamp)
            for rel, (version, size) in (details or {}).items():
                path = tree.join(folder, rel.strip("/"))
                if path not in groups:  # a name that is also a folder shows as the folder
                    self.attrs.put(path, Attr(tree.FILE, size, version), stamp=stamp)
            if itself is not None and not groups[folder] and folder != "/":
                # The empty listing said what the name itself is (see _stat_remote).
                attr = Attr(tree.FILE, itself[1], itself[0]) if itself else _NEGATIVE
                self.attrs.put(folder, attr, stamp=stamp)
            return groups[folder]

        return self._lists.do(folder, fetch)

    def _stat_remote(self, path):
        """Ask the server what ``path`` is: a file, a folder or nothing (cached).

        With a server that offers listings with details (or before we know),
        one listing of ``path`` answers it: not empty, a folder (whose files'
        attributes come with it, so ``ls -l`` of a folder not seen before
        costs that one request); empty, the answer's ``X-List-Self`` says
        whether a file of that name exists.  Otherwise (or when the answer
        does not say) a HEAD, and on 404 a listing decides between a folder
        and nothing.
        """
        try:
            attr = self._resolve_remote(path)
        except RemoteError as e:
            if e.status is not None and e.status < 500:
                raise
            attr = self._stat_cached(path)
            if attr is None:
                raise
            logger.warning("server unavailable (%s); serving %s from the cache", e, path)
            return attr  # not remembered: ask the server again next time
        self.attrs.put(path, attr)
        return attr

    def _resolve_remote(self, path):
        listed = False
        if self.remote.offers_details is not False:
            if path in self.local_dirs or self._list(path):
                return Attr(tree.DIR, 0, None)
            listed = self.remote.offers_details
            said = self.attrs.get(path)  # put there by the listing's X-List-Self
            if said is not None:
                return said
        try:
            version, size = self.remote.stat(path)
            return Attr(tree.FILE, size, version)
        except NotFoundError:
            if path in self.local_dirs or (not listed and self._list(path)):
                return Attr(tree.DIR, 0, None)
            return _NEGATIVE

    def _stat_cached(self, path):
        """The newest cached version of ``path`` (server down), or None.

        The Client's cache keeps ``files/<name>`` with the version as mtime;
        a cached folder there means a folder of the store.
        """
        try:
            st = os.stat(self.store.dir + path)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return Attr(tree.DIR, 0, None)
        return Attr(tree.FILE, st.st_size, int(st.st_mtime))

    def _lookup(self, path):
        """The :class:`Attr` of ``path``; raises ENOENT when it does not exist."""
        if path == "/":
            return Attr(tree.DIR, 0, None)
        self._check(path)
        with self._lock:
            writer = self.writers.get(path)
            if writer is not None and not writer.unlinked:
                return Attr(tree.FILE, writer.size(), None)
            if path in self.local_dirs:
                return Attr(tree.DIR, 0, None)
        attr = self.attrs.get(path)
        if attr is None:
            parent, base = tree.parent_and_base(path)
            entries = self.listings.get(parent)
            if entries is not None:
                kind = entries.get(base)
                if kind is None:
                    raise FsError(errno.ENOENT)
                if kind == tree.DIR:
                    return Attr(tree.DIR, 0, None)
            attr = self._stats.do(path, lambda: self._stat_remote(path))
        if attr.kind is None:
            raise FsError(errno.ENOENT)
        return attr

    def _stat_dict(self, attr, writer=None):
        if attr.kind == tree.DIR:
            mode = stat.S_IFDIR | (0o555 if self.read_only else 0o755)
            mtime, size, nlink = self.mount_time, 0, 2
        else:
            mode = stat.S_IFREG | (0o444 if self.read_only else 0o644)
            size, nlink = attr.size, 1
            mtime = attr.version if attr.version is not None else self.mount_time
            if writer is not None:
                size, mtime = writer.size(), writer.mtime()
        ns = int(mtime * 1e9)
        return {
            "st_mode": mode, "st_nlink": nlink, "st_size": size,
            "st_uid": self.uid, "st_gid": self.gid,
            "st_mtime": ns, "st_ctime": ns, "st_atime": ns,
            "st_blksize": 128 * 1024, "st_blocks": (size + 511) // 512,
        }

    def _note_exists(self, path, attr):
        """Record a file or folder made through the mount in the caches."""
        self.attrs.put(path, attr)
        parent, base = tree.parent_and_base(path)
        while True:
            entries = self.listings.get(parent)
            if entries is not None:
                if entries.get(base) != tree.DIR:
                    entries[base] = attr.kind
            if parent == "/":
                break
            path, attr = parent, Attr(tree.DIR, 0, None)
            parent, base = tree.parent_and_base(parent)

    def _note_gone(self, path):
        self.attrs.put(path, _NEGATIVE)
        self.listings.pop_prefix(path)
        parent, base = tree.parent_and_base(path)
        entries = self.listings.get(parent)
        if entries is not None:
            entries.pop(base, None)

    @operation
    def getattr(self, path, fh=None):
        handle = self.handles.get(_fh_of(fh)) if fh is not None else None
        if isinstance(handle, WriteBuffer) and not handle.unlinked:
            return self._stat_dict(Attr(tree.FILE, 0, None), writer=handle)
        if handle is not None and not isinstance(handle, WriteBuffer):
            return self._stat_dict(Attr(tree.FILE, handle.size, handle.version))
        with self._lock:
            writer = self.writers.get(path)
        if writer is not None and not writer.unlinked:
            return self._stat_dict(Attr(tree.FILE, 0, None), writer=writer)
        return self._stat_dict(self._lookup(path))

    @operation
    def readdir(self, path, fh):
        attr = self._lookup(path)
        if attr.kind != tree.DIR:
            raise FsError(errno.ENOTDIR)
        entries = dict(self._list(path))
        prefix = path.rstrip("/") + "/"
        with self._lock:
            for d in self.local_dirs:
                if d.startswith(prefix) and "/" not in d[len(prefix):]:
                    entries.setdefault(d[len(prefix):], tree.DIR)
            for p, w in self.writers.items():
                if p.startswith(prefix) and "/" not in p[len(prefix):] and not w.unlinked:
                    entries.setdefault(p[len(prefix):], tree.FILE)
        self._prefetch_attrs(path, entries)
        result = [".", ".."]
        for name, kind in sorted(entries.items()):
            mode = stat.S_IFDIR if kind == tree.DIR else stat.S_IFREG
            result.append((name, {"st_mode": mode}, 0))
        return result

    def _prefetch_attrs(self, folder, entries):
        """Fetch the attributes of the folder's files at once, so the ``stat`` calls after readdir are free.

        One pipelined burst of HEADs (see :mod:`.pipeline`).  All results get
        the time stamp of the end of the burst: a large folder is not half
        expired by the time ``ls -l`` reaches its last entries.  Files whose
        answer is missing are asked for by ``getattr`` as usual.
        """
        missing = [tree.join(folder, n) for n, k in entries.items()
                   if k == tree.FILE and self.attrs.get(tree.join(folder, n)) is None]
        if not missing:
            return
        found = self.remote.stat_many(missing[:MAX_PREFETCH])
        stamp = self.clock()
        for path, (version, size) in found.items():
            self.attrs.put(path, Attr(tree.FILE, size, version), stamp=stamp)

    @operation
    def statfs(self, path):
        st = os.statvfs(self.spool_dir)
        return {
            "f_bsize": st.f_bsize, "f_frsize": st.f_frsize, "f_blocks": st.f_blocks,
            "f_bfree": st.f_bfree, "f_bavail": st.f_bavail, "f_files": st.f_files,
            "f_ffree": st.f_ffree, "f_favail": st.f_favail, "f_namemax": 255,
        }

    # -- handles ---------------------------------------------------------------

    def _register(self, handle):
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self.handles[fh] = handle
            handle.refs += 1
            return fh

    def _close_handle(self, handle, final=False):
        """Drop one reference; the last one closes a reader or detaches a writer.

        Returns True when the caller must :meth:`_finalize_writer` the handle
        (outside the global lock: it may fsync a large file).
        """
        handle.refs -= 1
        if handle.refs > 0 and not final:
            return False
        if isinstance(handle, WriteBuffer):
            if self.writers.get(handle.path) is handle:
                del self.writers[handle.path]
            return True
        if isinstance(handle, RangedReader):
            self.ranged.pop((handle.name, handle.version), None)
        handle.close()
        return False

    # -- reading -----------------------------------------------------------------

    def _open_cached(self, vname):
        """An open file of ``vname`` from the Client's cache, or None."""
        with self.locks.lock_for(vname) as lock:
            lock.lock_shared()
            try:
                f, _ = self.store.get_stream(vname)
                return f
            except NotFoundError:
                return None

    def _download(self, vname):
        """Put ``vname`` into the Client's cache (once, however many ask at a time)."""

        def fetch():
            if self.store.exists(vname):
                return
            stream, got = self.client.get_stream(vname, serve_from_cache=True)
            stream.close()

        self._downloads.do(vname, fetch)

    def _open_reader(self, path, attr, fi):
        vname = versioned_name(path, attr.version)
        f = self._open_cached(vname)
        if f is None and attr.size <= self.range_threshold:
            self._download(vname)
            f = self._open_cached(vname)
        if f is not None:
            reader = CachedReader(f, attr.version, os.fstat(f.fileno()).st_size)
            return self._register(reader)
        with self._lock:
            key = (path, attr.version)
            reader = self.ranged.get(key)
            if reader is None:
                reader = self.ranged[key] = RangedReader(
                    self.remote, path, attr.version, attr.size, self.spool_dir,
                    prefetch=self._readahead_pool.submit if self._readahead_pool else None)
            return self._register(reader)

    @operation
    def open(self, path, fi):
        self._check(path)
        flags = fi.flags
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
        if writing:
            self._require_writable()
            fi.fh = self._open_writer(path, truncate=bool(flags & os.O_TRUNC))
            return 0
        with self._lock:
            writer = self.writers.get(path)
            if writer is not None and not writer.unlinked:
                fi.fh = self._register(writer)
                fi.direct_io = 1  # its content changes under us: bypass the page cache
                return 0
        attr = self._lookup(path)
        if attr.kind == tree.DIR:
            raise FsError(errno.EISDIR)
        for attempt in range(2):
            try:
                fi.fh = self._open_reader(path, attr, fi)
                break
            except (NotFoundError, StaleVersionError):
                # The version we resolved was replaced meanwhile: resolve again, once.
                self.attrs.pop(path)
                if attempt:
                    raise
                attr = self._lookup(path)
        with self._lock:
            if self.direct_io_above is not None and attr.size > self.direct_io_above:
                # Reads bypass the kernel's page cache (see --direct-io-above):
                # it neither serves this handle nor keeps anything of it.
                fi.direct_io = 1
                self.opened_versions.pop(path, None)
            else:
                # The kernel may keep its page cache when the version is the one
                # it cached: a versioned file never changes.  Any other version
                # (or the first open) drops the pages, so a name replaced by
                # another client never shows old bytes.
                fi.keep_cache = 1 if self.opened_versions.get(path) == attr.version else 0
                self.opened_versions[path] = attr.version
        return 0

    @operation
    def read(self, path, size, offset, fi):
        handle = self.handles.get(_fh_of(fi))
        if handle is None:
            raise FsError(errno.EBADF)
        try:
            return handle.read(size, offset)
        except StaleVersionError:
            if path:
                self.attrs.pop(path)  # the next open resolves the new version
            raise

    @operation
    def read_buf(self, path, bufpp, size, offset, fi):
        """Like :meth:`read`, but answers with the handle's descriptor: libfuse moves the bytes."""
        handle = self.handles.get(_fh_of(fi))
        if handle is None:
            raise FsError(errno.EBADF)
        try:
            fd, size = handle.fd_for(size, offset)
        except StaleVersionError:
            if path:
                self.attrs.pop(path)
            raise
        reply_fd(bufpp, fd, offset, size)
        return 0

    @operation
    def release(self, path, fi):
        with self._lock:
            handle = self.handles.pop(_fh_of(fi), None)
            if handle is None:
                return 0
            if not isinstance(handle, WriteBuffer):
                self._close_handle(handle)
                return 0
        # Writers may upload: outside the global lock.
        with handle.lock:
            if handle.refs == 1 and handle.dirty and self._may_upload(handle):
                try:
                    self._upload(handle)
                except Exception:
                    logger.warning("upload of %s at release failed", handle.path, exc_info=True)
            with self._lock:
                detached = self._close_handle(handle)
            if detached:
                self._finalize_writer(handle)
        return 0

    # -- writing -----------------------------------------------------------------

    def _open_writer(self, path, truncate, mode_create=False):
        """Register a handle on the (new or shared) WriteBuffer of ``path``."""
        check_name_errno(path)
        with self._lock:
            writer = self.writers.get(path)
            if writer is not None and not writer.unlinked:
                if truncate:
                    writer.truncate(0)
                return self._register(writer)
        attr = None
        if not mode_create:
            try:
                attr = self._lookup(path)
            except FsError as e:
                if e.errno != errno.ENOENT:
                    raise
        if attr is not None and attr.kind == tree.DIR:
            raise FsError(errno.EISDIR)
        parent = tree.parent_and_base(path)[0]
        if self._lookup(parent).kind != tree.DIR:
            raise FsError(errno.ENOTDIR)
        writer = WriteBuffer(path, self.store.tmp_dir, base_version=attr.version if attr else None)
        try:
            if attr is None or truncate:
                writer.dirty = True  # a new or emptied file is uploaded even if never written
            else:
                self._load_into(writer, path, attr)
        except BaseException:
            writer.remove()
            raise
        with self._lock:
            other = self.writers.get(path)
            if other is not None and not other.unlinked:
                writer.remove()  # another opener won the race: share its buffer
                return self._register(other)
            self.writers[path] = writer
            return self._register(writer)

    def _load_into(self, writer, path, attr):
        """Copy the stored content of ``path`` into a new WriteBuffer."""
        vname = versioned_name(path, attr.version)
        f = self._open_cached(vname)
        if f is None and attr.size <= self.range_threshold:
            self._download(vname)
            f = self._open_cached(vname)
        if f is None:
            got = self.remote.read_range(path, attr.version, 0, attr.size, writer.fd, 0) if attr.size else 0
            if got != attr.size:
                raise FsError(errno.EIO, "short read of %s" % path)
            return
        with f:
            offset = 0
            while True:
                n = os.copy_file_range(f.fileno(), writer.fd, 1 << 24, offset, offset)
                if n == 0:
                    break
                offset += n

    @operation
    def create(self, path, mode, fi):
        self._require_writable()
        fi.fh = self._open_writer(path, truncate=True, mode_create=True)
        self._note_exists(path, Attr(tree.FILE, 0, None))
        self.attrs.pop(path)  # the open writer answers getattr until it is uploaded
        return 0

    @operation
    def write(self, path, data, offset, fi):
        handle = self.handles.get(_fh_of(fi))
        if not isinstance(handle, WriteBuffer):
            raise FsError(errno.EBADF)
        return handle.write(data, offset)

    @operation
    def truncate(self, path, length, fh=None):
        self._require_writable()
        handle = self.handles.get(_fh_of(fh)) if fh is not None else None
        if handle is None:
            with self._lock:
                handle = self.writers.get(path)
        if isinstance(handle, WriteBuffer):
            handle.truncate(length)
            return 0
        # Not open here: stage, truncate and upload at once.
        fh_new = self._open_writer(path, truncate=(length == 0))
        with self._lock:
            writer = self.handles.pop(fh_new)
        try:
            with writer.lock:
                writer.truncate(length)
                if writer.refs == 1:
                    self._upload(writer)
        finally:
            with self._lock:
                detached = self._close_handle(writer)
            if detached:
                self._finalize_writer(writer)
        return 0

    def _may_upload(self, writer):
        return not (writer.unlinked or writer.abandoned or writer.failed is not None)

    def _upload(self, writer):
        """Upload the whole staged file as the newest version of its name."""
        if writer.failed is not None:
            raise FsError(errno.EIO, "a write to %s failed earlier; not uploading" % writer.path)
        known = max(writer.base_version or 0, self._floor(writer.path))
        cached = self.attrs.get(writer.path)
        if cached is not None and cached.version:
            known = max(known, cached.version)
        # A version above every one we know of, so this write wins even
        # within the same second as the previous one (or as a delete).
        version = max(int(time.time()), known + 1)
        try:
            for attempt in range(UPLOAD_CONFLICT_RETRIES):
                try:
                    vname = self.client.put_file(versioned_name(writer.path, version), writer.tmp_path,
                                                 to_local_store=False, compress_hint=False)
                    break
                except VersionConflictError:
                    # Deleted (by someone else) at a version >= ours: go above it.
                    if attempt == UPLOAD_CONFLICT_RETRIES - 1:
                        raise
                    version += 1
        except Exception:
            if writer.base_version is None and writer.uploaded is None:
                # A new file never stored (e.g. the upload was refused): create noted
                # it in the listings; it must not linger there once closed.
                self._note_gone(writer.path)
            raise
        got = split_name(vname)[1]
        self._raise_floor(writer.path, got)
        writer.dirty = False
        writer.uploaded = vname
        writer.base_version = got
        self._note_exists(writer.path, Attr(tree.FILE, writer.size(), got))
        return vname

    def _floor(self, path):
        with self._lock:
            return self.floors.get(path, 0)

    def _raise_floor(self, path, version):
        with self._lock:
            self.floors[path] = max(version, self.floors.get(path, 0))
            self.floors.move_to_end(path)
            while len(self.floors) > MAX_FLOORS:
                self.floors.popitem(last=False)

    def _delete(self, path, version):
        """Delete ``path`` at a version not older than ``version``, now, or anything we wrote."""
        version = max(int(time.time()), version or 0, self._floor(path))
        self.client.delete_file(versioned_name(path, version))
        self._raise_floor(path, version)

    def _finalize_writer(self, writer):
        """After the last close: hand an uploaded staged file to the Client's cache."""
        if writer.uploaded and not writer.dirty and not writer.unlinked:
            try:
                os.fsync(writer.fd)  # the cache must never hold a torn file after a crash
                writer.close_fd()
                staged = self.store.stage_file(writer.tmp_path, link=True)
                with self.locks.lock_for(writer.uploaded) as lock:
                    lock.lock_exclusive()
                    self.store.commit(staged, writer.uploaded)
            except Exception:
                logger.warning("could not cache %s", writer.uploaded, exc_info=True)
        writer.remove()  # closes the descriptor too

    @operation
    def flush(self, path, fi):
        handle = self.handles.get(_fh_of(fi))
        if not isinstance(handle, WriteBuffer):
            return 0
        with handle.lock:
            if not handle.dirty:
                return 0
            if handle.failed is not None:
                raise FsError(handle.failed)
            if not handle.written and handle.base_version is None:
                # A new file nobody wrote to yet: a shell's ``> file`` closes a
                # duplicate before writing.  Release uploads it if it stays empty.
                return 0
            if killed_by_signal(fuse.fuse_get_context()[2] if fuse else 0):
                # The writer died mid-way: what it wrote may be partial.
                handle.abandoned = True
                logger.warning("writer of %s was killed; not uploading", handle.path)
                return 0
            if self._may_upload(handle):
                self._upload(handle)
        return 0

    @operation
    def fsync(self, path, datasync, fi):
        handle = self.handles.get(_fh_of(fi))
        if isinstance(handle, WriteBuffer):
            with handle.lock:
                if handle.dirty and self._may_upload(handle):
                    self._upload(handle)
        return 0

    # -- namespace changes ---------------------------------------------------------

    @operation
    def unlink(self, path):
        self._require_writable()
        check_name_errno(path)
        attr = self._lookup(path)
        if attr.kind == tree.DIR:
            raise FsError(errno.EISDIR)
        with self._lock:
            writer = self.writers.pop(path, None)
            if writer is not None:
                writer.unlinked = True
        try:
            self._delete(path, attr.version)
        except NotFoundError:
            if writer is None:
                raise
        self._note_gone(path)
        return 0

    @operation
    def mkdir(self, path, mode):
        self._require_writable()
        check_name_errno(path)
        try:
            self._lookup(path)
            raise FsError(errno.EEXIST)
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
        parent = tree.parent_and_base(path)[0]
        if self._lookup(parent).kind != tree.DIR:
            raise FsError(errno.ENOTDIR)
        with self._lock:
            self.local_dirs.add(path)
        self._note_exists(path, Attr(tree.DIR, 0, None))
        return 0

    def _dir_is_empty(self, path):
        self.listings.pop(path)
        if self._list(path):
            return False
        prefix = path + "/"
        with self._lock:
            return not any(d.startswith(prefix) for d in self.local_dirs) and not any(
                p.startswith(prefix) for p, w in self.writers.items() if not w.unlinked)

    @operation
    def rmdir(self, path):
        self._require_writable()
        if path == "/":
            raise FsError(errno.EBUSY)
        if self._lookup(path).kind != tree.DIR:
            raise FsError(errno.ENOTDIR)
        if not self._dir_is_empty(path):
            raise FsError(errno.ENOTEMPTY)
        with self._lock:
            self.local_dirs.discard(path)
        self._note_gone(path)
        return 0

    @operation
    def rename(self, old, new):
        """Files: put under ``new``, then delete ``old`` (not atomic).

        Empty mount-local folders are renamed in the mount; a folder with
        stored files gives EXDEV, so ``mv`` falls back to copy + delete.
        """
        self._require_writable()
        check_name_errno(new)
        attr = self._lookup(old)
        try:
            target = self._lookup(new)
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
            target = None
        parent = tree.parent_and_base(new)[0]
        if self._lookup(parent).kind != tree.DIR:
            raise FsError(errno.ENOTDIR)
        if attr.kind == tree.DIR:
            if target is not None and (target.kind != tree.DIR or not self._dir_is_empty(new)):
                raise FsError(errno.ENOTEMPTY if target.kind == tree.DIR else errno.ENOTDIR)
            if not self._dir_is_empty(old):
                raise FsError(errno.EXDEV)
            with self._lock:
                self.local_dirs.discard(old)
                self.local_dirs.add(new)
            self._note_gone(old)
            self._note_exists(new, Attr(tree.DIR, 0, None))
            return 0
        if target is not None and target.kind == tree.DIR:
            raise FsError(errno.EISDIR)
        with self._lock:
            writer = self.writers.get(old)
            if writer is not None and not writer.unlinked and new not in self.writers:
                # Open for writing here: it moves, and is uploaded under its new name.
                del self.writers[old]
                writer.path = new
                writer.dirty = True
                self.writers[new] = writer
        if writer is not None and writer.path == new:
            if writer.uploaded or attr.version is not None:
                try:
                    self._delete(old, writer.base_version or attr.version)
                except NotFoundError:
                    pass
            with writer.lock:
                if self._may_upload(writer):
                    self._upload(writer)
            self._note_gone(old)
            return 0
        # A stored file: copy through the Client's cache, then delete the old name.
        vname = versioned_name(old, attr.version)
        self._download(vname)
        f = self._open_cached(vname)
        if f is None:
            raise FsError(errno.EIO, "cannot stage %s for rename" % old)
        with f:
            staging = WriteBuffer(new, self.store.tmp_dir)
            try:
                offset = 0
                while True:
                    n = os.copy_file_range(f.fileno(), staging.fd, 1 << 24, offset, offset)
                    if n == 0:
                        break
                    offset += n
                known = target.version if target is not None else None
                staging.base_version = known
                self._upload(staging)
            finally:
                staging.refs = 1
                self._finalize_writer(staging)
        try:
            self._delete(old, attr.version)
        except NotFoundError:
            pass
        self._note_gone(old)
        return 0

    @operation
    def chmod(self, path, mode):
        self._lookup(path)
        return 0

    @operation
    def chown(self, path, uid, gid):
        self._lookup(path)
        return 0

    @operation
    def utimens(self, path, times=None):
        self._lookup(path)
        return 0


#: Kernel read-ahead for the mount, KiB.  The kernel caps a FUSE mount's
#: read-ahead at 128 KiB, so every read request would carry 128 KiB; a larger
#: window makes requests of :data:`MAX_READ` and keeps a few of them in flight.
READ_AHEAD_KIB = 2048


def tune_readahead(mountpoint, timeout=10.0):
    """Raise the mount's read-ahead (``/sys/class/bdi/<dev>/read_ahead_kb``); best effort.

    Runs in a thread after ``init``: stat of the mountpoint waits until the
    kernel has finished setting up the mount, so it must not run in ``init``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            dev = os.stat(mountpoint).st_dev
            parent = os.stat(os.path.dirname(mountpoint.rstrip("/")) or "/").st_dev
        except OSError:
            return
        if dev != parent:
            break
        time.sleep(0.05)
    else:
        return
    path = "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(dev), os.minor(dev))
    try:
        with open(path, "w") as f:
            f.write(str(READ_AHEAD_KIB))
    except OSError as e:
        logger.debug("cannot set %s: %s", path, e)


def check_name_errno(path):
    """Validate a file name to create; EINVAL with the reason when it is not valid."""
    try:
        check_name(path, allow_version=False)
    except InvalidNameError as e:
        raise FsError(errno.EINVAL, str(e)) from None
