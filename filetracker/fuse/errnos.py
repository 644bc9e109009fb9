"""Map filetracker errors and HTTP statuses to ``errno`` values.

The mapping is the contract of the mount (issue 9): not found -> ENOENT, bad
name -> EINVAL, auth refused -> EACCES, no space -> ENOSPC, server down or
timing out -> EIO.  Everything else a server can say is also an EIO: a shell
user gets a clear, bounded failure, never a hang or a traceback.
"""

import errno

from filetracker.errors import (
    InvalidNameError,
    InvalidVersionError,
    NotFoundError,
    RemoteError,
    VersionConflictError,
)

_STATUS_ERRNO = {
    400: errno.EINVAL,
    401: errno.EACCES,
    403: errno.EACCES,
    404: errno.ENOENT,
    409: errno.EBUSY,
    413: errno.EFBIG,
    416: errno.EINVAL,
    507: errno.ENOSPC,
}


def errno_for_status(status):
    """The errno for an HTTP error status (``None``: no answer at all -> EIO)."""
    if status is None:
        return errno.EIO
    return _STATUS_ERRNO.get(status, errno.EIO)


def errno_for(exc):
    """The errno that best describes ``exc`` (any exception; unknown ones -> EIO)."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc.errno
    hint = getattr(exc, "errno_hint", None)
    if hint:
        return hint
    if isinstance(exc, (InvalidNameError, InvalidVersionError)):
        return errno.EINVAL
    if isinstance(exc, NotFoundError):
        return errno.ENOENT
    if isinstance(exc, VersionConflictError):
        return errno.EBUSY
    if isinstance(exc, RemoteError):
        return errno_for_status(exc.status)
    return errno.EIO


class FsError(OSError):
    """An error a FUSE operation returns to the kernel (``errno`` set)."""

    def __init__(self, err, message=None):
        super().__init__(err, message or "")
