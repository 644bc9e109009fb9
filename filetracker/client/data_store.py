"""The abstract contract of a place that stores versioned files.

A name is an absolute path, optionally with ``@version`` (see
:mod:`filetracker.names`).  A version is an integer Unix timestamp.  Every
method that is given a versioned name acts on that exact version and raises
:class:`~filetracker.errors.NotFoundError` when the store holds another one.
"""

import collections

from filetracker.client._files import atomic_write_stream


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
        with stream:
            atomic_write_stream(filename, stream)
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

