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
  ``fsync``, on the last ``release``, and on a ``flush`` by the process that
  opened the handle for writing (not by a child that inherited it, nor a
  reader; not while the file is empty).  Nothing half-written is uploaded: a
  failed local write, an unlinked-while-open file, or a writer killed by a
  signal leaves the stored version alone.
- ``mkdir`` makes a folder that lives in the mount until a file is written
  under it.  ``rename`` of a file is put-new then delete-old (not atomic).
  ``chmod``/``chown``/``utimens`` succeed without effect (the store keeps no
  modes or owners, and versions are assigned at upload).  ``truncate`` works.
- Errors map to errno by :mod:`.errnos`.

This module holds :class:`FiletrackerFS`: its state, the mount lifecycle
(``init``/``destroy``) and the handle table (``_register`` /
``_close_handle``).  The operations themselves live in mixins, one
responsibility each: :mod:`.lookup` (name resolution, ``getattr``,
``readdir``), :mod:`.reading` (``open``/``read``/``release``),
:mod:`.writing` (staged writes and their upload), :mod:`.namespace`
(``unlink``/``mkdir``/``rmdir``/``rename``); :mod:`.ops` has what they
share (:data:`~.ops.Attr`, the :func:`~.ops.operation` errno wrapper).
"""

import collections
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from filetracker.fuse.attrcache import TTLCache
from filetracker.fuse.fastread import FUSE_CAP_SPLICE_WRITE
from filetracker.fuse.handles import RangedReader, WriteBuffer
from filetracker.fuse.lookup import LookupOps
from filetracker.fuse.namespace import NamespaceOps
from filetracker.fuse.ops import (
    Attr,
    Operations,
    check_name_errno,
    logger,
    operation,
)
from filetracker.fuse.readahead import READ_AHEAD_KIB, tune_readahead
from filetracker.fuse.reading import ReadingOps
from filetracker.fuse.singleflight import SingleFlight
from filetracker.fuse.writing import WritingOps

__all__ = ["Attr", "FiletrackerFS", "MAX_READ", "READ_AHEAD_KIB", "check_name_errno", "operation",
           "tune_readahead"]

#: Largest read request the kernel sends (the ``max_read`` mount option).  The
#: kernel's limit is 1 MiB, but a spliced reply must fit a pipe (1 MiB by
#: default, header included), so 512 KiB keeps replies zero-copy; the
#: read-ahead window (:data:`READ_AHEAD_KIB`) keeps several in flight.
MAX_READ = 512 * 1024


class FiletrackerFS(LookupOps, ReadingOps, WritingOps, NamespaceOps, Operations):
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
        #: path -> (size, version) of a file as getattr last told the kernel (see ReadingOps.open)
        self.reported = TTLCache(attr_timeout, clock)
        self.clock = clock
        self.local_dirs = set()
        self.hidden = set()  # libfuse's names of files removed while open (see NamespaceOps._hide)
        self.writers = {}  # path -> WriteBuffer open for writing
        self.ranged = {}  # (path, version) -> RangedReader shared by readers
        self.handles = {}  # fh -> handle object
        self.openers = {}  # fh opened for writing -> process id of its opener (see flush)
        self.opened_versions = {}  # path -> version of the last open (kernel page cache validity)
        self.page_cache_users = {}  # path -> Counter: versions of the open handles using the page cache
        self.page_cache_user_of = {}  # fh -> (path, version) of such a handle
        self.mixed_pages = set()  # paths whose page cache may hold bytes of another version (see open)
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
            self.openers.clear()
            self.page_cache_users.clear()
            self.page_cache_user_of.clear()
        for handle in handles:
            if self._close_handle(handle, final=True):
                if handle.dirty and self._may_upload(handle):
                    # Still open for writing (maybe half written): not uploaded.
                    logger.warning("unmounted while %s was open for writing: its unsaved changes are lost",
                                   handle.path)
                self._finalize_writer(handle)

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

