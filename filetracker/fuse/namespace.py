"""Namespace changes: ``unlink``, ``mkdir``, ``rmdir``, ``rename`` and the no-op metadata setters.

:class:`NamespaceOps` is a mixin of :class:`~.fs.FiletrackerFS`.  Folders
made by ``mkdir`` live in the mount (``local_dirs``) until a file is written
under them.  ``rename`` of a file is put-new then delete-old (not atomic); a
file open for writing moves with its buffer; a folder holding stored files
gives EXDEV.  A file removed while open is deleted from the store at once
(libfuse's rename to ``.fuse_hidden...`` is not stored, see ``_hide``).
``chmod``/``chown``/``utimens`` only check that the name exists (the store
keeps no modes or owners; versions come from uploads).
"""

import errno
import re

from filetracker.errors import (
    NotFoundError,
)
from filetracker.fuse import tree
from filetracker.fuse.errnos import FsError
from filetracker.fuse.handles import WriteBuffer
from filetracker.fuse.ops import Attr, check_name_errno, operation
from filetracker.names import versioned_name

#: The names libfuse gives files removed while open (``hide_node``: node id and a counter).
HIDDEN_NAME = re.compile(r"^\.fuse_hidden[0-9a-f]{16}$")


class NamespaceOps:
    """Make, remove and rename names (mixin of FiletrackerFS)."""

    @operation
    def unlink(self, path):
        self._require_writable()
        with self._lock:
            if path in self.hidden:
                # The last close of a file removed while open (see _hide): already deleted.
                self.hidden.discard(path)
                return 0
        check_name_errno(path)
        self._remove(path)
        return 0

    def _remove(self, path):
        """Delete the file ``path``; a buffer open for writing it is never uploaded."""
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

    def _hide(self, old, hidden):
        """libfuse's "rename to a hidden name" of a file still open: a removal of ``old`` here.

        When a file open in this mount is removed (or replaced by a rename),
        libfuse renames it to ``.fuse_hidden...`` so its open handles keep
        working, and removes that name at the last close.  Storing it under
        that name would show it to every client (a download and an upload):
        instead ``old`` is deleted from the store now, the handles keep
        reading their local copy, and the hidden name exists for ``unlink``
        only.
        """
        self._remove(old)
        with self._lock:
            self.hidden.add(hidden)

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
        if HIDDEN_NAME.match(tree.parent_and_base(new)[1]):
            self._hide(old, new)
            return 0
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
        if self._move_writer(old, new, target):
            return 0
        if attr.version is None:   # it was open for writing, and was closed (and stored) meanwhile
            attr = self._lookup(old)
        # A stored file: copy through the Client's cache, then delete the old name.
        f, attr = self._open_for_copy(old, attr)
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

    def _move_writer(self, old, new, target):
        """Rename a file open for writing here: its buffer moves to ``new``; False when ``old`` is none.

        Nothing is uploaded now: the writers may not be done, and the upload
        under the new name happens at their ``flush``/``release`` as for any
        file open for writing (never a half-written file; nothing when the
        writer is killed).  The old name's stored version is deleted now.
        """
        with self._lock:
            writer = self.writers.get(old)
            if writer is None or writer.unlinked or new in self.writers:
                return False
        # An upload of it in progress (the release after a close, which the kernel sends
        # without waiting) ends first: moved under it, its end would mark the buffer clean
        # under the new name, which then was never stored.  (Lock order: writer, then mount.)
        with writer.lock, self._lock:
            if self.writers.get(old) is not writer or writer.unlinked or new in self.writers:
                return False   # closed and stored meanwhile: a stored file, copied by the caller
            del self.writers[old]
            old_version = writer.base_version  # what is stored under the old name (None: nothing)
            writer.path = new
            writer.dirty = True  # even if unchanged since an upload: not stored under the new name yet
            writer.uploaded = None  # that upload was of the old name
            # The stored version the new name replaces (uploads go above it).
            writer.base_version = target.version if target is not None else None
            self.writers[new] = writer
        self.attrs.pop(new)  # the open writer answers for the new name until it is uploaded
        if old_version is not None:
            try:
                self._delete(old, old_version)
            except NotFoundError:
                pass
        self._note_gone(old)
        return True

    def _open_for_copy(self, old, attr):
        """``(open file, attr)``: the stored ``old`` from the Client's cache, to copy under another name.

        When another client replaced the version ``attr`` meanwhile (its
        download is refused), ``old`` is resolved again, once.
        """
        def download(version_attr):
            vname = versioned_name(old, version_attr.version)
            self._download(vname)
            return vname

        vname, attr = self._on_newest(old, attr, download)
        f = self._open_cached(vname)
        if f is None:
            raise FsError(errno.EIO, "cannot stage %s for rename" % old)
        return f, attr

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

