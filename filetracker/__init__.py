"""filetracker: shared storage for versioned files.

The public surface: :class:`filetracker.client.Client`, the name helpers
:func:`split_name` / :func:`versioned_name` and the exception hierarchy rooted
at :class:`FiletrackerError`.
"""

from filetracker.errors import (
    ContentConflictError,
    FiletrackerError,
    InvalidNameError,
    InvalidVersionError,
    NotFoundError,
    RemoteError,
    VersionConflictError,
    VersionNotFoundError,
)
from filetracker.names import check_name, split_name, versioned_name

__all__ = [
    "Client",
    "ContentConflictError",
    "FiletrackerError",
    "InvalidNameError",
    "InvalidVersionError",
    "NotFoundError",
    "RemoteError",
    "VersionConflictError",
    "VersionNotFoundError",
    "check_name",
    "split_name",
    "versioned_name",
]


def __getattr__(attr):
    # Lazy so that `import filetracker` (e.g. in the server) does not pull in requests.
    if attr == "Client":
        from filetracker.client import Client

        return Client
    raise AttributeError(attr)
