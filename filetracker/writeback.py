"""Early writeback of a file being written, so its final fsync has little left to do.

A large upload is written into the page cache much faster than a disk takes it;
with the default dirty-page limits (background writeback from a tenth of memory
on, or after 30 s) little of it reaches the disk before the upload's ``fsync``,
so receiving and writing out happen one after the other.  :class:`Writeback`
asks the kernel to start writing each few megabytes out as soon as they are
written (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, the call
PostgreSQL's ``*_flush_after`` and RocksDB's ``bytes_per_sync`` use):
it does not wait for the disk and makes nothing durable by itself, so the
``fsync`` at the end stays the one durability point, but by then most of the
file is on the disk or on its way.  The pages stay cached for readers.

Where the call does not exist (not Linux, no glibc) this does nothing.
"""

import mmap

#: start writing out once this many bytes were written since the last start
WRITEBACK_BYTES = 4 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2
_UNLOADED = object()
_sync_file_range = _UNLOADED


def _load_sync_file_range():
    """libc's ``sync_file_range`` with its 64-bit signature, or None.

    Looked up among the symbols the interpreter already has (``dlopen(NULL)``),
    on first use: no ``ctypes.util.find_library`` (it runs ``ldconfig``) and no
    import cost for processes that never write a large file.
    """
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
        fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        fn.restype = ctypes.c_int
    except Exception:  # noqa: BLE001 - no ctypes, no such symbol, not a POSIX dlopen: do without
        return None
    return fn


def start_writeback(fd, offset, length):
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk.

    Advisory: returns False (and changes nothing) where unsupported or refused;
    an I/O error here shows again at the caller's ``fsync``.
    """
    global _sync_file_range
    if _sync_file_range is _UNLOADED:
        _sync_file_range = _load_sync_file_range()
    if _sync_file_range is None or length <= 0:
        return False
    return _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


class Writeback:
    """Starts writeback of a file written sequentially, every ``every`` bytes.

    Call :meth:`written` after each write with the file's size so far; the
    caller's user-space buffer is flushed (``flush``) only when writeback
    actually starts.  Ranges end on a page boundary: the last, partly filled
    page is left for the next write to complete, else it would go to disk
    twice (and on disks with stable pages the next write would wait for it).
    """

    def __init__(self, fileno, flush, every=WRITEBACK_BYTES, start=start_writeback, page=mmap.PAGESIZE):
        self._fileno = fileno
        self._flush = flush
        self._every = every
        self._start = start
        self._page = page
        self._started = 0   # bytes [0, _started) were handed to the kernel for writeback

    def written(self, size):
        """``size`` bytes are now written; start writeback when enough whole pages piled up."""
        end = size - size % self._page
        if end - self._started < self._every:
            return
        self._flush()
        self._start(self._fileno, self._started, end - self._started)
        self._started = end

    def rest(self, size):
        """The file is complete at ``size`` bytes: start writeback of all not yet started (the
        last page too).  For many small files fsynced one after another: started together,
        their writes overlap on the disk instead of each waiting for the fsync before it."""
        if size <= self._started:
            return
        self._flush()
        self._start(self._fileno, self._started, size - self._started)
        self._started = size
