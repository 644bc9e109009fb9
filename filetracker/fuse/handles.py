"""Open files of the mount: what a file handle reads from and writes to.

- :class:`CachedReader`: an open descriptor of the versioned file in the
  Client's cache.  Reads are ``pread`` on it, never from memory; a newer
  version renamed into the cache later does not disturb it (we hold the old
  inode).
- :class:`RangedReader`: a large file read by HTTP ranges into a sparse,
  anonymous local file (``O_TMPFILE``-like, removed when closed), block by
  block; concurrent readers of one version share it and its downloads.
- :class:`BufferReader`: a reader of a file open for writing in this mount:
  its own descriptor of the staged file, so it never keeps the buffer (or
  the name) attached to the writers once they closed.
- :class:`WriteBuffer`: a staged file (a temporary file in the cache's
  ``tmp/``, made with the umask's mode since it becomes the cache entry) that
  takes the writes; the FUSE layer uploads it whole, so a half-written file
  is never visible in the store.
"""

import os
import tempfile
import threading

from filetracker.client._files import new_temp_file
from filetracker.fuse.errnos import FsError

#: Unit of ranged reads: a read touching a block fetches at least that block.
BLOCK = 256 * 1024
#: Sequential reads double the blocks fetched per request up to this many.
MAX_RUN_BLOCKS = 32  # 8 MiB per request


class CachedReader:
    """Reads from an open file (``fileobj`` is owned and closed here)."""

    kind = "cached"

    def __init__(self, fileobj, version, size):
        self.fileobj = fileobj
        self.fd = fileobj.fileno()
        self.version = version
        self.size = size
        self.refs = 0
        try:  # whole files are mostly read front to back: a larger read-ahead window
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass

    def read(self, size, offset):
        return os.pread(self.fd, size, offset)

    def fd_for(self, size, offset):
        """``(fd, size clamped to the file)`` for a read of ``[offset, offset + size)``."""
        return self.fd, max(0, min(size, self.size - offset))

    def close(self):
        self.fileobj.close()


class RangedReader:
    """A sparse local mirror of one version of a remote file, filled by ranges.

    ``remote`` is a :class:`filetracker.fuse.remote.Remote`.  The mirror is
    an unnamed temporary file in ``spool_dir``: it disappears when closed or
    when the process dies.  ``refs`` counts the handles sharing it (managed by
    the FUSE layer).
    """

    kind = "ranged"

    def __init__(self, remote, name, version, size, spool_dir, prefetch=None):
        self.remote = remote
        #: ``prefetch(fn)`` runs ``fn`` in the background (an executor's submit), or None.
        self.prefetch = prefetch
        self.name = name
        self.version = version
        self.size = size
        self.file = tempfile.TemporaryFile(dir=spool_dir)
        self.fd = self.file.fileno()
        self.refs = 0
        nblocks = (size + BLOCK - 1) // BLOCK
        self._have = bytearray(nblocks)
        self._inflight = {}
        self._lock = threading.Lock()
        self._next_sequential = 0
        self._run = 1

    def _claim(self, block):
        """Under the lock: claim a run of missing blocks starting at ``block``.

        Sequential access (a read right where the last run ended) doubles the
        run length; a jump resets it, so a ``head -c`` fetches one block.
        """
        if block == self._next_sequential and block > 0:
            self._run = min(self._run * 2, MAX_RUN_BLOCKS)
        elif block != self._next_sequential:
            self._run = 1
        end = block
        limit = min(block + self._run, len(self._have))
        while end < limit and not self._have[end] and end not in self._inflight:
            end += 1
        event = threading.Event()
        for b in range(block, end):
            self._inflight[b] = event
        self._next_sequential = end
        return end, event

    def _ensure(self, block):
        while True:
            with self._lock:
                if self._have[block]:
                    return
                event = self._inflight.get(block)
                if event is None:
                    end, event = self._claim(block)
                    leader = True
                else:
                    leader = False
            if not leader:
                event.wait()
                continue  # fetched, or the leader failed and we try ourselves
            try:
                start = block * BLOCK
                length = min(end * BLOCK, self.size) - start
                got = self.remote.read_range(self.name, self.version, start, length, self.fd)
                if got != length:
                    raise FsError(5, "short read of %s: %d of %d bytes" % (self.name, got, length))
                with self._lock:
                    for b in range(block, end):
                        self._have[b] = 1
            finally:
                with self._lock:
                    for b in range(block, end):
                        self._inflight.pop(b, None)
                event.set()

    def read(self, size, offset):
        fd, size = self.fd_for(size, offset)
        return os.pread(fd, size, offset) if size else b""

    def fd_for(self, size, offset):
        """Fetch what ``[offset, offset + size)`` needs; ``(fd, size clamped to the file)``."""
        end = min(offset + size, self.size)
        if offset >= end:
            return self.fd, 0
        for block in range(offset // BLOCK, (end - 1) // BLOCK + 1):
            self._ensure(block)
        self._read_ahead()
        return self.fd, end - offset

    def _read_ahead(self):
        """While reading sequentially, fetch the next run in the background.

        Only once the run length shows a sequential reader (so ``head -c``
        fetches no more than it needs); at most one run ahead.
        """
        if self.prefetch is None:
            return
        with self._lock:
            nxt = self._next_sequential
            if (self._run < 4 or nxt >= len(self._have) or self._have[nxt]
                    or nxt in self._inflight or self.file.closed):
                return

        def fetch():
            try:
                if not self.file.closed:
                    self._ensure(nxt)
            except Exception:
                pass  # a reader that needs the block fetches it again and reports the error

        try:
            self.prefetch(fetch)
        except RuntimeError:
            pass  # executor shut down

    def close(self):
        self.file.close()


class BufferReader:
    """A read-only view of a :class:`WriteBuffer`'s staged file, for a reader opened beside the writers.

    It holds a duplicate of the buffer's descriptor: it sees what the
    writers write while they write, and keeps reading the same bytes after
    the buffer was uploaded, handed to the cache or dropped.  It does not
    count as a handle of the buffer, so the writers' last close detaches
    the buffer from its name even while such readers are open.
    """

    kind = "buffer"

    def __init__(self, buffer):
        self.path = buffer.path
        self.fd = os.dup(buffer.fd)
        self.refs = 0

    def read(self, size, offset):
        return os.pread(self.fd, size, offset)

    def fd_for(self, size, offset):
        """``(fd, size clamped to the staged file's current length)``."""
        return self.fd, max(0, min(size, self.size() - offset))

    def size(self):
        return os.fstat(self.fd).st_size

    def mtime(self):
        return os.fstat(self.fd).st_mtime

    def close(self):
        os.close(self.fd)


class WriteBuffer:
    """A staged file for writes to ``path`` of the mount.

    ``dirty``: written since the last upload.  ``failed``: an errno if a
    local write failed (then it is never uploaded).  ``unlinked``: the name
    was removed while open (never uploaded).  ``abandoned``: a process killed by
    a signal wrote last (not uploaded unless written again).  ``refused``: the server
    refused the last upload (a 4xx; not retried unless written again).  ``refs``
    counts the handles open for writing (readers have a :class:`BufferReader`).
    ``base_version``: the stored version the content started from (or None).
    """

    kind = "write"

    def __init__(self, path, tmp_dir, base_version=None):
        self.path = path
        # Mode 0666 less the umask, as the Client makes its files: the staged
        # file becomes the cache entry, which other users of the cache may read
        # (mkstemp's 0600 would stay on it).
        self.tmp_path = new_temp_file(tmp_dir, "fuse.")
        try:
            self.fd = os.open(self.tmp_path, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            os.unlink(self.tmp_path)
            raise
        self.base_version = base_version
        self.dirty = False
        self.generation = 0  # counts writes and truncations (an upload knows what it carried)
        self.last_writer = 0  # FUSE caller (thread id) of the last write, 0 when unknown
        self.failed = None
        self.unlinked = False
        self.abandoned = False
        self.refused = False  # the server refused the last upload of these bytes (4xx): not asked again
        self.uploaded = None  # versioned name of the last upload
        self.kept = False  # the last upload's bytes are what the server keeps (not a newer version)
        self.refs = 0
        self.lock = threading.RLock()

    def read(self, size, offset):
        return os.pread(self.fd, size, offset)

    def copy_from(self, src_fd):
        """Fill the staged file with the whole of ``src_fd`` (a kernel-side copy, 16 MiB a call)."""
        offset = 0
        while True:
            n = os.copy_file_range(src_fd, self.fd, 1 << 24, offset, offset)
            if n == 0:
                return
            offset += n

    def fd_for(self, size, offset):
        """``(fd, size clamped to the staged file's current length)``."""
        return self.fd, max(0, min(size, os.fstat(self.fd).st_size - offset))

    def write(self, data, offset, writer=0):
        """Write at ``offset`` for the caller ``writer`` (a thread id, for the killed-writer rule).

        A write after a killed writer's clears the abandoned mark: someone alive goes on
        writing the file and will close it.
        """
        try:
            n = os.pwrite(self.fd, data, offset)
        except OSError as e:
            self.failed = e.errno
            raise
        self._changed(writer)
        return n

    def truncate(self, length, writer=0):
        try:
            os.ftruncate(self.fd, length)
        except OSError as e:
            self.failed = e.errno
            raise
        self._changed(writer)

    def _changed(self, writer):
        self.dirty = True
        self.generation += 1
        self.last_writer = writer
        self.abandoned = False
        self.refused = False

    def size(self):
        return os.fstat(self.fd).st_size

    def mtime(self):
        return os.fstat(self.fd).st_mtime

    def close_fd(self):
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1

    def remove(self):
        self.close_fd()
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass
