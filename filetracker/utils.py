"""Helpers under the 2.x import path ``filetracker.utils``, for code written against 2.x.

``split_name``, ``versioned_name`` and ``check_name`` are :mod:`filetracker.names`'
(ours raise :class:`~filetracker.errors.InvalidNameError`, a ``ValueError``, where 2.x
raised ``ValueError``); :func:`file_digest`, :func:`mkdir` and :func:`rmdirs` keep the
2.x behaviour.  New code should import from :mod:`filetracker.names`.
"""

import errno
import hashlib
import os

from filetracker.names import check_name, split_name, versioned_name

_CHUNK = 1 << 20


def file_digest(source):
    """Hex SHA-256 of a file's content: ``source`` is a path or a binary file-like object
    (read from where it is to its end, not closed)."""
    if isinstance(source, (str, bytes, os.PathLike)):
        with open(source, "rb") as f:
            return file_digest(f)
    h = hashlib.sha256()
    for chunk in iter(lambda: source.read(_CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def mkdir(name):
    """Create the folder ``name`` and its parents (mode 0700, as 2.x); no error if it exists."""
    os.makedirs(name, 0o700, exist_ok=True)


def rmdirs(name, root):
    """Remove empty folders from ``name`` upwards, stopping at ``root`` (never removed);
    stops quietly at the first folder that is not empty or is gone."""
    while name != root:
        try:
            os.rmdir(name)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                return
            raise
        name = os.path.dirname(name)


__all__ = ["check_name", "file_digest", "mkdir", "rmdirs", "split_name", "versioned_name"]
