"""The abstract contract of a place that stores versioned files.

A name is an absolute path, optionally with ``@version`` (see
:mod:`filetracker.names`).  A version is an integer Unix timestamp.  Every
method that is given a versioned name acts on that exact version and raises
:class:`~filetracker.errors.NotFoundError` when the store holds another one.
"""

import collections
import os
import tempfile

from filetracker.client._files import atomic_write_stream, remove_quietly, write_stream


class _Staged:
    """What :class:`DataStore`'s default staging hands to ``commit``/``discard``: a path,
    and whether it is a temporary copy of ours (removed when done)."""

    __slots__ = ("path", "temporary")

    def __init__(self, path, temporary):
        self.path = path
        self.temporary = temporary


def close_stream(stream):
    """Close ``stream`` if it can be closed (a store's ``get_stream`` may return any object
    with ``read``)."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()


class DataStore:
    """Abstract base class of the local cache and the remote store."""

    FileInfoEntry = collections.namedtuple("FileInfoEntry", ["name", "mtime", "size"])
    """One stored file: ``name`` (versioned), ``mtime`` (float), ``size`` (bytes)."""

    def add_stream(self, name, stream):
        """Store the bytes read from ``stream`` under ``name``.

        With a version in ``name`` the file is stored with that version,
        unless the store already holds a newer (or the same) version, which is
        then kept.  Returns the versioned name of what the store now holds.
        """
        raise NotImplementedError

    def add_file(self, name, filename, compress_hint=True):
        """Like :meth:`add_stream`, reading the local file ``filename``.

        ``compress_hint`` lets a remote store compress the transfer.
        """
        with open(filename, "rb") as f:
            return self.add_stream(name, f)

    def get_stream(self, name):
        """Return ``(binary file-like, versioned name)``; the caller closes it."""
        raise NotImplementedError

    def get_file(self, name, filename):
        """Save the file ``name`` as ``filename`` (atomically); return its versioned name."""
        stream, vname = self.get_stream(name)
        try:
            atomic_write_stream(filename, stream)
        finally:
            close_stream(stream)
        return vname

    def exists(self, name):
        """True when the file (in the given version, if any) is stored."""
        raise NotImplementedError

    def file_version(self, name):
        """The newest stored version (an int); a version in ``name`` is ignored."""
        raise NotImplementedError

    def file_size(self, name):
        """The (uncompressed) size of the file in bytes."""
        raise NotImplementedError

    def delete_file(self, name):
        """Delete the file; with a version, only if that version is not older than the stored one."""
        raise NotImplementedError

    def list_files(self):
        """A list of :attr:`FileInfoEntry` for every stored file."""
        raise NotImplementedError

    # -- staging: how the client fills a local store (the cache) -----------------------
    # The client stages a file first and commits it under the name's lock, so the lock is
    # never held during a copy or a download.  LocalDataStore stages into its own folder and
    # commits with a rename; these defaults let any store be the cache through add_file.

    def stage_file(self, filename, link=False):
        """Prepare the local file ``filename`` for :meth:`commit` (``link``: the caller wrote it
        and it may be shared instead of copied).  The default keeps the path; ``commit``
        reads the file."""
        return _Staged(filename, temporary=False)

    def stage_stream(self, stream, progress=None):
        """Prepare the bytes of ``stream`` for :meth:`commit`: the default copies them into a
        temporary file."""
        fd, path = tempfile.mkstemp(prefix="filetracker-stage-")
        try:
            with os.fdopen(fd, "wb") as f:
                write_stream(f, stream, progress)
        except BaseException:
            remove_quietly(path)
            raise
        return _Staged(path, temporary=True)

    def commit(self, staged, name, replace_equal=False):
        """Store what was staged as ``name`` (as :meth:`add_file`); return the versioned name
        the store now holds.  The staged file is consumed either way.

        ``replace_equal``: the staged bytes are the server's at this version, so they should
        replace what the store holds at an equal version (:class:`LocalDataStore` does);
        :meth:`add_file` decides here."""
        try:
            return self.add_file(name, staged.path)
        finally:
            self.discard(staged)

    def discard(self, staged):
        """Drop what was staged and not committed."""
        if staged.temporary:
            remove_quietly(staged.path)
