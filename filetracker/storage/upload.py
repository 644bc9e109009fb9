"""An upload in progress: a temporary file under ``tmp/`` fed plain bytes.

The handler (or replication code) creates it with
:meth:`filetracker.storage.ObjectStore.begin_upload`, calls :meth:`Upload.write`
as bytes arrive (SHA-256 and size are computed on the way), then either hands it
to :meth:`~filetracker.storage.ObjectStore.commit_upload` or calls
:meth:`Upload.abort`.  Nothing written here is visible to readers until a
commit renames it into ``blobs/``.
"""

import contextlib
import errno
import hashlib
import os

from filetracker.storage.errors import StorageError, StoreFull
from filetracker.writeback import Writeback

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc):
    """True when ``exc`` is an OSError meaning "no space left"."""
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


class Upload:
    """A temporary file being written; not thread-safe (one writer at a time)."""

    def __init__(self, path):
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._file = open(path, "xb")
        # written out while the rest arrives, so finish()'s fsync is short
        self._writeback = Writeback(self._file.fileno(), self._file.flush)
        self.closed = False
        self.finished = False  # fsynced and closed whole (commit_uploads takes it as it is)

    @property
    def sha256(self):
        """Hex SHA-256 of the bytes written so far."""
        return self._hash.hexdigest()

    def write(self, data):
        """Append plain (uncompressed) bytes.  Raises StoreFull on ENOSPC (upload aborted)."""
        if self.closed:
            raise StorageError("write to a finished upload")
        if not data:
            return
        with self._aborted_on_error():
            self._file.write(data)
            self._writeback.written(self.size + len(data))
        self._hash.update(data)
        self.size += len(data)

    def start_writeback(self):
        """Ask the kernel to start writing the file out now (advisory; :meth:`finish` still
        fsyncs).  Called on each of many small uploads before finishing them one by one, so
        the fsyncs after the first find their data on its way.  Raises like :meth:`write`."""
        if self.closed:
            raise StorageError("upload already finished or aborted")
        with self._aborted_on_error():
            self._writeback.rest(self.size)

    def finish(self):
        """Flush and fsync the temporary file and close it (the store calls this)."""
        if self.closed:
            raise StorageError("upload already finished or aborted")
        with self._aborted_on_error():
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        self.closed = True
        self.finished = True

    @contextlib.contextmanager
    def _aborted_on_error(self):
        """An OSError inside aborts the upload and is raised again (StoreFull when the disk is full)."""
        try:
            yield
        except OSError as e:
            self.abort()
            if is_disk_full(e):
                raise StoreFull("no space left on the store's disk") from None
            raise

    def abort(self):
        """Close and remove the temporary file; safe to call more than once."""
        self.closed = True
        try:
            self._file.close()
        except OSError:
            pass
        discard(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Anything not committed by the time the block ends is dropped.
        if os.path.exists(self.path):
            self.abort()


def discard(path):
    """Remove ``path`` if it exists."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
