"""Helpers under the 2.x import path ``filetracker.utils``, for code written against 2.x.

``split_name``, ``versioned_name`` and ``check_name`` are :mod:`filetracker.names`'
(ours raise :class:`~filetracker.errors.InvalidNameError`, a ``ValueError``, where 2.x
raised ``ValueError``); :func:`file_digest`, :func:`mkdir` and :func:`rmdirs` do what
2.x's did (``rmdirs`` never raises).  New code should import from :mod:`filetracker.names`.
"""

import hashlib
import os

from filetracker.client._files import remove_empty_dirs
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
    """Remove empty folders from ``name`` upwards, stopping at ``root`` (never removed) and at
    the first folder that cannot be removed (not empty, gone); nothing outside ``root``."""
    remove_empty_dirs(name, root)


__all__ = ["check_name", "file_digest", "mkdir", "rmdirs", "split_name", "versioned_name"]
