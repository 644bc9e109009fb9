"""Server-side storage: :class:`ObjectStore` (content-addressed blobs + SQLite records).

See ``docs/ARCHITECTURE.md`` for the contract and :mod:`filetracker.storage.store`
for the crash-safety argument.
"""

from filetracker.storage.errors import (
    BlobMissing,
    ChecksumMismatch,
    SizeMismatch,
    StorageError,
    StoreFull,
)
from filetracker.storage.store import ObjectStore, VerifyReport, clear_uploads_of, fsync_dir, hash_file
from filetracker.storage.upload import Upload

__all__ = [
    "BlobMissing", "ChecksumMismatch", "ObjectStore", "SizeMismatch", "StorageError", "StoreFull",
    "Upload", "VerifyReport", "clear_uploads_of", "fsync_dir", "hash_file",
]
