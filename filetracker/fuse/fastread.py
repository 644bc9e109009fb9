"""The cheap read path of the mount: ``read_buf`` answers that name a descriptor.

mfusepy's plain ``read`` callback moves every byte kernel -> Python ``bytes``
-> the ctypes buffer of libfuse -> kernel, holding the GIL, with a Python
object per request.  libfuse's ``read_buf`` callback may instead answer with a
``struct fuse_bufvec`` naming ``(fd, offset, size)``; libfuse then moves the
data itself after the callback has returned (without the GIL): with
``FUSE_CAP_SPLICE_WRITE`` by ``splice`` (the file's pages into a pipe, the
pipe into ``/dev/fuse``: one copy, done by the kernel), else by one ``pread``
into its own buffer.  libfuse frees the ``fuse_bufvec`` with ``free()``, so it
is allocated here with the C library's ``malloc``.

:func:`pin_thread_state` is the other per-request cost: libfuse's worker
threads are not Python threads, so every callback made Python create a thread
state (and ``mmap`` a frame stack) on entry and destroy it on exit.
"""

import ctypes
import struct
import threading

#: ``enum fuse_buf_flags`` (fuse_common.h).
FUSE_BUF_IS_FD = 1 << 1
FUSE_BUF_FD_SEEK = 1 << 2
#: ``fuse_conn_info.capable``/``want`` bit: libfuse may splice replies into /dev/fuse.
FUSE_CAP_SPLICE_WRITE = 1 << 7

# struct fuse_bufvec { size_t count, idx, off; struct fuse_buf buf[1]; } with
# struct fuse_buf { size_t size; enum flags; void *mem; int fd; off_t pos;
# size_t mem_size /* libfuse >= 3.17 only; older ones never read it */ }.
_BUFVEC = struct.Struct("=QQQQi4xQi4xqQ")
_RAW = ctypes.c_char * _BUFVEC.size
_VOIDP = ctypes.c_void_p

_libc = ctypes.CDLL(None)
_malloc = _libc.malloc
_malloc.restype = ctypes.c_void_p
_malloc.argtypes = [ctypes.c_size_t]


def reply_fd(bufpp, fd, offset, size):
    """Set ``*bufpp`` to a new bufvec: ``size`` bytes of ``fd`` at ``offset``.

    ``size`` must not reach past the end of the file (a short read makes
    libfuse allocate a bounce buffer).  0 answers an empty read.  Raises
    MemoryError when ``malloc`` fails; ``*bufpp`` is then left untouched
    (libfuse frees whatever it points to).  About 3 us: this runs once per
    read request, so it avoids ``ctypes.cast`` and extra foreign calls.
    """
    p = _malloc(_BUFVEC.size)
    if not p:
        raise MemoryError("malloc of a fuse_bufvec failed")
    if size > 0:
        _BUFVEC.pack_into(_RAW.from_address(p), 0, 1, 0, 0, size, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK, 0, fd, offset, 0)
    else:
        _BUFVEC.pack_into(_RAW.from_address(p), 0, 1, 0, 0, 0, 0, 0, -1, 0, 0)  # an empty memory buffer
    _VOIDP.from_address(ctypes.addressof(bufpp.contents)).value = p


def read_bufvec(bufpp):
    """``(size, flags, fd, pos)`` of the bufvec ``*bufpp`` points to (for tests)."""
    p = ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0]
    fields = _BUFVEC.unpack(ctypes.string_at(p, _BUFVEC.size))
    return fields[3], fields[4], fields[6], fields[7]


def free_bufvec(bufpp):
    """``free()`` the bufvec ``*bufpp`` points to (what libfuse does; for tests)."""
    _libc.free.argtypes = [ctypes.c_void_p]
    _libc.free(ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0])


_pinned = threading.local()


def pin_thread_state():
    """Keep this thread's Python thread state alive between FUSE callbacks.

    ctypes enters a callback from a foreign thread with ``PyGILState_Ensure``
    and leaves with ``PyGILState_Release``, which destroys the thread state
    it had to create, so each request paid for a new one.  One extra
    ``PyGILState_Ensure``, never released, keeps it.  libfuse (>= 3.12) keeps
    its worker threads (idle ones are not destroyed by default) and caps them
    (``max_threads``, 10 by default), so this holds a bounded number of thread
    states.
    Harmless in Python threads (their state lives until they end anyway).
    """
    if not getattr(_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.done = True
