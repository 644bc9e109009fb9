"""Errors raised by :mod:`filetracker.storage` (all :class:`FiletrackerError`)."""

from filetracker.errors import FiletrackerError


class StorageError(FiletrackerError):
    """Root of the errors of the server-side object store."""


class ChecksumMismatch(StorageError, ValueError):
    """The uploaded content does not match the SHA-256 the writer announced."""


class SizeMismatch(StorageError, ValueError):
    """The uploaded content does not have the size the writer announced."""


class StoreFull(StorageError):
    """The disk is full (ENOSPC/EDQUOT): nothing partial was kept."""


class BlobMissing(StorageError):
    """A data record was to be applied but its blob is not present here."""
