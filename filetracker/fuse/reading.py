"""Opening and reading stored files: ``open``, ``read``, ``read_buf``, ``release``.

:class:`ReadingOps` is a mixin of :class:`~.fs.FiletrackerFS`.  ``open``
for reading resolves the current version and serves it from the Client's
cache (downloading it there once, shared by concurrent openers), or by HTTP
ranges for large uncached files; it also decides the kernel page-cache
policy (``keep_cache`` / ``direct_io``).  ``open`` for writing and
``release`` of a writer are the FUSE entry points of :mod:`.writing`: they
hand over to ``_open_writer`` / ``_upload`` / ``_finalize_writer``.
"""

import collections
import errno
import os

from filetracker.errors import (
    FiletrackerError,
    NotFoundError,
)
from filetracker.fuse import tree
from filetracker.fuse.errnos import FsError
from filetracker.fuse.fastread import reply_fd
from filetracker.fuse.handles import BufferReader, CachedReader, RangedReader, WriteBuffer
from filetracker.fuse.ops import _fh_of, logger, operation
from filetracker.fuse.remote import StaleVersionError
from filetracker.names import versioned_name


class ReadingOps:
    """Open, read and release handles (mixin of FiletrackerFS)."""

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
            self._note_opener(fi.fh)
            return 0
        with self._lock:
            writer = self.writers.get(path)
            if writer is not None and not writer.unlinked:
                # A view of its own: the buffer stays the writers' (see BufferReader).
                fi.fh = self._register(BufferReader(writer))
                fi.direct_io = 1  # its content changes under us: bypass the page cache
                return 0
        attr = self._lookup(path)
        if attr.kind == tree.DIR:
            raise FsError(errno.EISDIR)
        try:
            fi.fh, attr = self._on_newest(path, attr, lambda a: self._open_reader(path, a, fi))
        except (NotFoundError, StaleVersionError):
            self.attrs.pop(path)
            raise
        if self._kernel_size_behind(path, attr):
            # The kernel would cut reads at the size it was told for an older version
            # (its attributes stay valid for half of --attr-timeout): read past it.
            fi.direct_io = 1
        with self._lock:
            if self.direct_io_above is not None and attr.size > self.direct_io_above:
                # Reads bypass the kernel's page cache (see --direct-io-above):
                # it neither serves this handle nor keeps anything of it.
                fi.direct_io = 1
                self.opened_versions.pop(path, None)
            else:
                keep, shared = self._page_cache_open(path, attr.version, fi.fh)
                fi.keep_cache = 1 if keep else 0
                # Handles of another version are open and may read into the page cache at
                # any time: this one bypasses it, so it never reads their bytes.
                if shared:
                    fi.direct_io = 1
        return 0

    def _resolve_again(self, path):
        """Forget what the mount knew of ``path`` and resolve it anew: the version it named was replaced.

        Raises ENOENT when the name is gone, EISDIR when it is a folder now.
        """
        self.attrs.pop(path)
        attr = self._lookup(path)
        if attr.kind == tree.DIR:
            raise FsError(errno.EISDIR)
        return attr

    def _on_newest(self, path, attr, action, again=None):
        """``(action(attr), attr)``: ``action`` on the version ``attr`` of ``path`` that the mount
        resolved.  When another client replaced that version meanwhile (its download or ranges
        are refused: NotFoundError, StaleVersionError), the name is resolved again, once
        (:meth:`_resolve_again`), ``again(attr)`` runs if given, and ``action`` runs on the new
        ``attr``; a second refusal is raised."""
        try:
            return action(attr), attr
        except (NotFoundError, StaleVersionError):
            attr = self._resolve_again(path)
        if again is not None:
            again(attr)
        return action(attr), attr

    def _kernel_size_behind(self, path, attr):
        """May the kernel still hold a smaller size for ``path`` than the version ``attr`` being opened?

        The kernel caches the attributes ``getattr`` answered (see
        ``_note_reported``) and limits page-cache reads to their size until they
        expire, even when ``open`` has resolved a newer, longer version.
        """
        told = self.reported.get(path)
        return told is not None and told[1] != attr.version and told[0] < attr.size

    def _page_cache_open(self, path, version, fh):
        """Under the lock: note an open of ``version``; ``(keep the pages?, other versions open?)``.

        The kernel keeps one page cache per name, shared by every handle of
        it.  A versioned file never changes, so the pages may stay while they
        can only hold the opened version's bytes.  They are dropped (keep
        False) at the first open, at an open of another version, and at the
        next open after one made while a handle of another version was open:
        that handle may have read since, refilling the pages with its old
        bytes.  While such handles are open (second value True) the caller
        bypasses the page cache for the new handle.
        """
        users = self.page_cache_users.setdefault(path, collections.Counter())
        keep = self.opened_versions.get(path) == version and path not in self.mixed_pages
        self.opened_versions[path] = version
        users[version] += 1
        self.page_cache_user_of[fh] = (path, version)
        shared = len(users) > 1
        if shared:
            self.mixed_pages.add(path)
        else:
            self.mixed_pages.discard(path)
        return keep, shared

    def _page_cache_release(self, fh):
        """Under the lock: the handle ``fh`` no longer reads through the page cache."""
        path, version = self.page_cache_user_of.pop(fh, (None, None))
        users = self.page_cache_users.get(path)
        if users is None:
            return
        users[version] -= 1
        if users[version] <= 0:
            del users[version]
        if not users:
            del self.page_cache_users[path]

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
            self.openers.pop(_fh_of(fi), None)
            self._page_cache_release(_fh_of(fi))
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
                except (FiletrackerError, OSError) as e:  # server down, refused: say it, no traceback
                    logger.warning("upload of %s at release failed: %s", handle.path, e)
                except Exception:
                    logger.warning("upload of %s at release failed", handle.path, exc_info=True)
            with self._lock:
                detached = self._close_handle(handle)
            if detached:
                self._finalize_writer(handle)
        return 0

