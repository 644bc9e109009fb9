"""The filetracker client library.

``from filetracker.client import Client, FiletrackerError`` works as with the
2.x package; the specific errors live in :mod:`filetracker.errors` and are
re-exported here.
"""

from filetracker.client.client import Client
from filetracker.client.data_store import DataStore
from filetracker.errors import (
    ContentConflictError,
    FiletrackerError,
    InvalidNameError,
    NotFoundError,
    RemoteError,
    VersionConflictError,
    VersionNotFoundError,
)

__all__ = [
    "Client",
    "ContentConflictError",
    "DataStore",
    "FiletrackerError",
    "InvalidNameError",
    "NotFoundError",
    "RemoteError",
    "VersionConflictError",
    "VersionNotFoundError",
]
