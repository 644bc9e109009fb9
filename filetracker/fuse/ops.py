"""What every FUSE operation module shares: the attribute tuple and the errno wrapper.

- :data:`Attr`: what the mount knows of a path (kind, size, version);
  ``_NEGATIVE`` is the cached "no such name".
- :func:`operation`: wraps a FUSE operation so every failure leaves it as a
  clean errno (:class:`~.errnos.FsError`), never a traceback.
- :func:`check_name_errno`: name validation for names about to be created.
- :func:`caller_pid`: who made the request being served.
- ``fuse`` / ``Operations``: the optional ``mfusepy`` binding (None / object
  when libfuse is missing, so the pure parts stay importable).
"""

import collections
import errno
import functools
import logging

from filetracker.errors import (
    FiletrackerError,
    InvalidNameError,
)
from filetracker.fuse.errnos import FsError, errno_for
from filetracker.fuse.fastread import pin_thread_state
from filetracker.names import check_name

try:  # the binding is optional at import time, so pure parts stay testable without libfuse
    import mfusepy as fuse
    Operations = fuse.Operations
except (ImportError, OSError):  # pragma: no cover - depends on the machine
    fuse = None
    Operations = object

logger = logging.getLogger("filetracker.fuse")

#: A cached file attribute: kind (tree.FILE / tree.DIR), size, version (int or None).
Attr = collections.namedtuple("Attr", ["kind", "size", "version"])
_NEGATIVE = Attr(None, 0, None)


def operation(fn):
    """Turn every failure of a FUSE operation into a clean errno.

    Expected errors (``FsError``, filetracker errors) map by :func:`errno_for`;
    anything unexpected is logged with its traceback and becomes EIO.
    """

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        pin_thread_state()
        try:
            return fn(self, *args, **kwargs)
        except FsError:
            raise
        except FiletrackerError as e:
            err = errno_for(e)
            if err == errno.EIO:
                logger.warning("%s%r: %s", fn.__name__, args[:1], e)
            raise FsError(err, str(e)) from None
        except OSError as e:
            raise FsError(errno_for(e), str(e)) from None
        except Exception:
            logger.exception("unexpected error in %s%r", fn.__name__, args[:1])
            raise FsError(errno.EIO) from None

    return wrapper


def caller_pid():
    """The id of the thread whose request is being served (0 when unknown, e.g. outside FUSE)."""
    return fuse.fuse_get_context()[2] if fuse else 0


def _fh_of(fi):
    """The handle id from a raw ``fuse_file_info`` (or None)."""
    return fi.fh if fi is not None else None


def check_name_errno(path):
    """Validate a file name to create; EINVAL with the reason when it is not valid."""
    try:
        check_name(path, allow_version=False)
    except InvalidNameError as e:
        raise FsError(errno.EINVAL, str(e)) from None
