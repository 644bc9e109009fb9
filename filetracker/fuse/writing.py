"""Writing files: staged writes uploaded whole on ``flush``/``fsync``/``release``.

:class:`WritingOps` is a mixin of :class:`~.fs.FiletrackerFS`.  A file open
for writing is one shared :class:`~.handles.WriteBuffer` per path (loaded
with the stored content unless truncated); ``create``/``write``/``truncate``
change it locally, and ``_upload`` puts it as a version above every version
this mount knows of for the name (its "floor"), retrying above a
conflicting delete.  A ``flush`` uploads only when the process that opened
the handle for writing closes it, and not while the file is empty; the last
``release`` uploads whatever is still dirty; ``fsync`` always uploads.
Nothing half-written is uploaded: a failed local write, an
unlinked-while-open file or a writer killed by a signal leave the stored
version alone.  After the last close an uploaded file is handed to the
Client's cache (``_finalize_writer``).  ``_delete`` deletes at a version not
below the floor, for :mod:`.namespace`.
"""

import errno
import os
import time

from filetracker.errors import (
    RemoteError,
    VersionConflictError,
)
from filetracker.fuse import tree
from filetracker.fuse.errnos import FsError
from filetracker.fuse.handles import WriteBuffer
from filetracker.fuse.ops import Attr, _fh_of, caller_pid, check_name_errno, logger, operation
from filetracker.fuse.proc import killed_by_signal, thread_group
from filetracker.names import split_name, versioned_name

#: Uploads refused because of a newer delete are retried this often, one version higher each time.
UPLOAD_CONFLICT_RETRIES = 5
#: Names whose last written/deleted version the mount remembers.
MAX_FLOORS = 100_000
#: An upload's version is at most this many seconds ahead of the clock (see _next_version).
MAX_LEAD = 1


class WritingOps:
    """Staged writes and their upload (mixin of FiletrackerFS)."""

    def _open_writer(self, path, truncate, mode_create=False):
        """Register a handle on the (new or shared) WriteBuffer of ``path``."""
        check_name_errno(path)
        with self._lock:
            writer = self.writers.get(path)
            if self._shareable(writer):
                if truncate:
                    writer.truncate(0, caller_pid())
                return self._register(writer)
            if writer is not None:
                # Never to be uploaded: its handles keep it, but the name (lookups, the
                # next opens) goes back to what is stored.
                del self.writers[path]
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
            if self._shareable(other):
                writer.remove()  # another opener won the race: share its buffer
                return self._register(other)
            self.writers[path] = writer
            return self._register(writer)

    @staticmethod
    def _shareable(writer):
        """May a new open of the name join ``writer``?  Not one that will never be uploaded
        (unlinked, failed, or last written by a killed process): a complete write through
        the new open would then be silently dropped.  It gets a buffer of its own."""
        return (writer is not None and not writer.unlinked and writer.failed is None
                and not writer.abandoned)

    def _load_into(self, writer, path, attr):
        """Copy the newest stored content of ``path`` into a new WriteBuffer.

        ``attr`` is what the mount resolved for ``path``; when another client
        replaced that version meanwhile (its download or ranges are refused),
        the name is resolved again, once, and ``writer.base_version`` follows.
        Raises ENOENT when the name was deleted meanwhile.
        """
        def again(newest):
            os.ftruncate(writer.fd, 0)  # a ranged copy may have written part of the old version
            writer.base_version = newest.version

        self._on_newest(path, attr, lambda a: self._copy_version_into(writer, path, a), again)

    def _copy_version_into(self, writer, path, attr):
        """Copy the version ``attr`` of ``path`` into ``writer`` (from the cache, a download or ranges)."""
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
            writer.copy_from(f.fileno())

    @operation
    def create(self, path, mode, fi):
        self._require_writable()
        fi.fh = self._open_writer(path, truncate=True, mode_create=True)
        self._note_opener(fi.fh)
        self._note_exists(path, Attr(tree.FILE, 0, None))
        self.attrs.pop(path)  # the open writer answers getattr until it is uploaded
        return 0

    @operation
    def write(self, path, data, offset, fi):
        handle = self.handles.get(_fh_of(fi))
        if not isinstance(handle, WriteBuffer):
            raise FsError(errno.EBADF)
        return handle.write(data, offset, caller_pid())

    @operation
    def truncate(self, path, length, fh=None):
        self._require_writable()
        handle = self.handles.get(_fh_of(fh)) if fh is not None else None
        if handle is None:
            with self._lock:
                handle = self.writers.get(path)
        if isinstance(handle, WriteBuffer):
            handle.truncate(length, caller_pid())
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
        return not (writer.unlinked or writer.abandoned or writer.refused or writer.failed is not None)

    @staticmethod
    def _refusal(exc):
        """Is ``exc`` a definite refusal of an upload (a 4xx answer: auth, too large), not a failure to ask?"""
        status = getattr(exc, "status", None) if isinstance(exc, RemoteError) else None
        return status is not None and 400 <= status < 500

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
        version = self._next_version(known)
        generation = writer.generation  # a write landing during the upload keeps it dirty
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
        except Exception as e:
            if self._refusal(e):
                # The server said no to these bytes: asking again (at release) would only
                # send them once more.  A later write makes the buffer uploadable again.
                writer.refused = True
            if writer.base_version is None and writer.uploaded is None:
                # A new file never stored (e.g. the upload was refused): create noted
                # it in the listings; it must not linger there once closed.
                self._note_gone(writer.path)
            raise
        got = split_name(vname)[1]
        self._raise_floor(writer.path, got)
        writer.dirty = writer.generation != generation
        writer.uploaded = vname
        # a newer version stored meanwhile (another machine) stays: vname names its bytes, not ours
        writer.kept = got == version
        writer.base_version = got
        self._note_exists(writer.path, Attr(tree.FILE, writer.size(), got))
        if not writer.kept:
            self.attrs.pop(writer.path)   # its size is not ours: the next lookup asks the server
        return vname

    @staticmethod
    def _next_version(known):
        """A version above ``known`` and at most :data:`MAX_LEAD` seconds ahead of the clock.

        Above, because the server breaks ties between equal versions by
        content, so an equal version may lose.  Not further ahead, or a file
        saved many times a second would run into the future, and other
        clients' uploads of the name (at the current time) would be
        silently older.  When ``known + 1`` is too far ahead, this sleeps
        (in the closing thread) until the clock allows it: at most
        :data:`MAX_LEAD` seconds, since this mount's own versions are never
        further ahead.  A ``known`` further ahead was not made here (another
        client's clock, an explicit version): the upload goes just above it
        at once instead of holding the close.
        """
        while True:
            now = time.time()
            version = max(int(now), known + 1)
            wait = version - MAX_LEAD - now
            if wait <= 0 or wait > MAX_LEAD:
                return version
            time.sleep(wait)

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
        if writer.uploaded and writer.kept and not writer.dirty and not writer.unlinked:
            try:
                os.fsync(writer.fd)  # the cache must never hold a torn file after a crash
                writer.close_fd()
                staged = self.store.stage_file(writer.tmp_path, link=True)
                with self.locks.lock_for(writer.uploaded) as lock:
                    lock.lock_exclusive()
                    # the server confirmed these bytes at this version: they replace another
                    # content of the same version a cache user may have put there
                    self.store.commit(staged, writer.uploaded, replace_equal=True)
            except Exception:
                logger.warning("could not cache %s", writer.uploaded, exc_info=True)
        writer.remove()  # closes the descriptor too

    def _note_opener(self, fh):
        """Remember the process that opened the writing handle ``fh``: only its closes upload."""
        opener = thread_group(caller_pid())
        with self._lock:
            self.openers[fh] = opener

    @staticmethod
    def _abandon(handle):
        """A writer of ``handle`` died from a signal mid-way: keep what is stored."""
        handle.abandoned = True
        logger.warning("writer of %s was killed; not uploading", handle.path)

    @operation
    def flush(self, path, fi):
        """A ``close`` of a descriptor: the handle's opener closing it uploads the file.

        A close by another process changes nothing: a child that inherited
        the descriptor (its exit must not publish the parent's half-written
        file, nor its death by a signal discard the parent's output) or a
        reader sharing the buffer.  The opener's close does not upload an
        empty file either (``> file`` closes a duplicate before writing; an
        overwrite must not store an empty version first): release uploads
        it if it stays empty.  A process dying from a signal that is the
        opener, or that wrote last, marks the buffer abandoned: what it
        wrote may be cut off, so nothing is uploaded, not even at release,
        unless someone writes to the file again.
        """
        fh = _fh_of(fi)
        handle = self.handles.get(fh)
        if not isinstance(handle, WriteBuffer):
            return 0
        pid = caller_pid()
        closer = thread_group(pid)
        with self._lock:
            opener = self.openers.get(fh)
        if opener is None or closer != opener:
            if handle.last_writer and thread_group(handle.last_writer) == closer and killed_by_signal(pid):
                self._abandon(handle)
            return 0
        with handle.lock:
            if not handle.dirty:
                return 0
            if handle.failed is not None:
                raise FsError(handle.failed)
            if killed_by_signal(pid):
                self._abandon(handle)
                return 0
            if handle.size() == 0:
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

