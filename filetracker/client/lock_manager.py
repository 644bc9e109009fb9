"""Per-name reader/writer locks that work across processes sharing one cache.

A lock is bound to an *unversioned* name: all versions of a file share it.
:class:`FcntlLockManager` keeps one lock file per name,
``<dir>/<xx>/<sha256 of the name>``, and locks it with ``flock``.  Hashed
names keep the folder flat and let ``/a`` and ``/a/b`` both have locks (a
path-shaped layout cannot hold a file ``a`` and a folder ``a``).  ``flock``
locks belong to an open file description, so two :class:`Lock` objects
exclude each other even within one process or across threads.  A child
made by ``fork()`` while a lock is held shares that hold (the descriptor is
inherited): do not fork while holding a lock.
"""

import errno
import fcntl
import hashlib
import os

from filetracker.names import check_name


class LockManager:
    """A factory of :class:`LockManager.Lock` objects, one per unversioned name."""

    class Lock:
        """A lock on one name.  Also a context manager (``close()`` on exit)."""

        def lock_shared(self):
            """Block until the lock is held shared (converts an exclusive hold)."""
            raise NotImplementedError

        def lock_exclusive(self):
            """Block until the lock is held exclusively (converts a shared hold, not atomically)."""
            raise NotImplementedError

        def try_lock_exclusive(self):
            """Take the lock exclusively if that is possible right now; return True if taken."""
            raise NotImplementedError

        def unlock(self):
            """Release the lock (no-op when not held)."""
            raise NotImplementedError

        def close(self, delete=False):
            """Release the lock and its resources; ``delete`` also removes the lock file.

            Idempotent.
            """

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    def lock_for(self, name):
        """A new :class:`Lock` for ``name`` (a version in ``name`` is ignored)."""
        raise NotImplementedError


class FcntlLockManager(LockManager):
    """Lock files under ``dir`` locked with ``flock``; safe across processes."""

    class FcntlLock(LockManager.Lock):
        def __init__(self, manager, path):
            self.manager = manager
            self.path = path
            self.fd = -1
            self._open()

        def _open(self):
            folder = os.path.dirname(self.path)
            try:
                os.makedirs(folder, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                _remove_2x_lock_file(folder)
                os.makedirs(folder, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)   # less the umask

        def _is_current(self):
            # A lock file may be removed (close(delete=True)) while we wait on
            # it; then our lock protects nothing, and we must lock the new file.
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return False
            mine = os.fstat(self.fd)
            return (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)

        def _lock(self, op):
            while True:
                fcntl.flock(self.fd, op)
                if self._is_current():
                    return True
                os.close(self.fd)
                self._open()

        def lock_shared(self):
            self._check_open()
            self._lock(fcntl.LOCK_SH)

        def lock_exclusive(self):
            self._check_open()
            self._lock(fcntl.LOCK_EX)

        def try_lock_exclusive(self):
            self._check_open()
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            if self._is_current():
                return True
            os.close(self.fd)
            self._open()
            return self.try_lock_exclusive()

        def unlock(self):
            if self.fd != -1:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

        def _check_open(self):
            if self.fd == -1:
                raise ValueError("lock is closed")

        def close(self, delete=False):
            if self.fd == -1:
                return
            try:
                # Only a holder of the lock may delete its file; a waiter on the
                # old inode notices (_is_current) and relocks the new file.
                if delete and self._is_current():
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
            finally:
                os.close(self.fd)
                self.fd = -1

        def __del__(self):
            try:
                self.close()
            except Exception:
                pass

    def __init__(self, dir):
        self.dir = os.path.abspath(dir)
        os.makedirs(self.dir, exist_ok=True)

    def path_for(self, name):
        """The lock file of ``name`` (version ignored)."""
        uname, _ = check_name(name)
        digest = hashlib.sha256(uname.encode("utf-8")).hexdigest()
        return os.path.join(self.dir, digest[:2], digest)

    def lock_for(self, name):
        return self.FcntlLock(self, self.path_for(name))


def _remove_2x_lock_file(folder):
    """Remove a plain file where the lock folder ``folder`` (``<dir>/<xx>``) belongs.

    A 2.x client kept its lock files at ``<dir>/<name>``: in a cache folder it
    used, a top-level name of two hex digits (``/10``, ``/ab``) left a file
    exactly where our folder of the names whose hash starts with those digits
    goes, and every lock of those names failed with ``FileExistsError``.  Such
    a file is never ours (our lock files are two levels down), and processes
    sharing a cache are upgraded together (README), so no 2.x process holds it.
    """
    try:
        if os.path.isdir(folder):
            return
        os.unlink(folder)
    except FileNotFoundError:
        pass   # another process removed it first


class NoOpLockManager(LockManager):
    """Locks that do nothing: for a client without a shared local cache."""

    class NoOpLock(LockManager.Lock):
        def lock_shared(self):
            pass

        def lock_exclusive(self):
            pass

        def try_lock_exclusive(self):
            return True

        def unlock(self):
            pass

    def lock_for(self, name):
        check_name(name)
        return self.NoOpLock()
