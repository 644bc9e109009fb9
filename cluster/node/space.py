"""Reserved free space: a node refuses new data (507) before its disk is actually full.

A full disk is handled anyway (an ENOSPC while writing an upload or committing
a record is a :class:`~filetracker.storage.StoreFull`, answered 507, nothing
partial kept), but SQLite then fails mid-transaction and every write pays for
a failed attempt.  With ``--min-free-bytes R`` the node keeps ``R`` bytes free:

* an upload does not start when the free space is below ``R`` (or below ``R``
  plus its announced ``Content-Length``, see :meth:`SpaceGuard.check`);
* while an upload is written, the free space is checked every
  :data:`CHECK_EVERY` bytes and the upload is aborted (temp file removed) when
  it drops below ``R``.

Records, tombstones and deletes are not refused: they are tiny, and a delete
frees space.  The check is a ``statvfs`` (a few microseconds), asked on the event
loop (:meth:`SpaceGuard.short_of`); only when it fails does a disk thread free the
replaced blobs kept for reads under way and decide (:meth:`SpaceGuard.check`).
"""

import os

from filetracker.storage import StoreFull

#: bytes written between two free-space checks of one upload
CHECK_EVERY = 4 << 20


class SpaceGuard:
    """``check(incoming)`` raises :class:`StoreFull` when the reserve would be touched."""

    def __init__(self, path, min_free_bytes, release=None):
        self.path = path
        self.min_free_bytes = int(min_free_bytes)
        self.refused = 0
        #: frees space kept only for reads under way (retired blobs); returns how many files it freed
        self._release = release

    def free_bytes(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def short_of(self, incoming=0):
        """Whether ``incoming`` more bytes would touch the reserve as things stand: one
        ``statvfs``, nothing freed, so an event loop may ask.  When it says yes, run
        :meth:`check` in a disk thread: it may free retired blobs first (unlinks of big
        files) and then decides."""
        return self.min_free_bytes > 0 and self.free_bytes() - max(0, incoming) < self.min_free_bytes

    def check(self, incoming=0):
        """Raise :class:`StoreFull` when ``incoming`` more bytes would touch the reserve even
        after freeing the retired blobs.  Blocking (see :meth:`short_of`)."""
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if free - max(0, incoming) < self.min_free_bytes and self._release is not None and self._release():
            free = self.free_bytes()   # replaced blobs kept for reads under way give way to new data
        if free - max(0, incoming) < self.min_free_bytes:
            self.refused += 1
            raise StoreFull("no space left on the node's disk: %d bytes free%s, %d reserved (--min-free-bytes)"
                            % (free, ", %d incoming" % incoming if incoming else "", self.min_free_bytes))


class GuardedUpload:
    """An :class:`~filetracker.storage.Upload` whose writes stop at the reserve."""

    def __init__(self, upload, guard):
        self._upload = upload
        self._guard = guard
        self._unchecked = 0

    def __getattr__(self, attr):
        return getattr(self._upload, attr)

    def write(self, data):
        self._unchecked += len(data)
        if self._unchecked >= CHECK_EVERY:
            self._unchecked = 0
            try:
                self._guard.check(len(data))
            except StoreFull:
                self._upload.abort()
                raise
        self._upload.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._upload.__exit__(*exc)


class ReservedSpaceStore:
    """The node's store with :meth:`begin_upload` guarded; everything else is the store's own."""

    def __init__(self, store, guard):
        self._store = store
        self.space = guard

    def __getattr__(self, attr):
        return getattr(self._store, attr)

    def begin_upload(self):
        self.space.check()
        return GuardedUpload(self._store.begin_upload(), self.space)

    def commit_upload(self, upload, *args, **kwargs):
        return self._store.commit_upload(_unguarded(upload), *args, **kwargs)

    def commit_uploads(self, items):
        return self._store.commit_uploads([(_unguarded(upload), record) for upload, record in items])


def _unguarded(upload):
    return upload._upload if isinstance(upload, GuardedUpload) else upload
