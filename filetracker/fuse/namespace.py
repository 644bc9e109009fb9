"""Namespace changes: ``unlink``, ``mkdir``, ``rmdir``, ``rename`` and the no-op metadata setters.

:class:`NamespaceOps` is a mixin of :class:`~.fs.FiletrackerFS`.  Folders
made by ``mkdir`` live in the mount (``local_dirs``) until a file is written
under them.  ``rename`` of a file is put-new then delete-old (not atomic); a
file open for writing moves with its buffer; a folder holding stored files
gives EXDEV.  ``chmod``/``chown``/``utimens`` only check that the name
exists (the store keeps no modes or owners; versions come from uploads).
"""

import errno

from filetracker.errors import (
    NotFoundError,
)
from filetracker.fuse import tree
from filetracker.fuse.errnos import FsError
from filetracker.fuse.handles import WriteBuffer
from filetracker.fuse.ops import Attr, check_name_errno, operation
from filetracker.names import versioned_name


class NamespaceOps:
    """Make, remove and rename names (mixin of FiletrackerFS)."""

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
                staging.copy_from(f.fileno())
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

