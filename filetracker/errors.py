"""The one exception hierarchy of filetracker.

Every error the library raises on purpose derives from :class:`FiletrackerError`,
so callers can catch that one type.  Specific subclasses say what went wrong:

- :class:`InvalidNameError` (also a :class:`ValueError`): a malformed file name;
- :class:`NotFoundError`: the file (or the asked-for version) does not exist;
- :class:`VersionConflictError`: a newer version (or a newer delete) wins, or
  (:class:`ContentConflictError`) another content of the same version;
- :class:`RemoteError`: a server answered with an error status (``.status``).
"""


#: How our servers begin the 404 message for a path that is no endpoint at all (not a missing
#: file): a client given a URL with a path in it (``http://host:port/prefix``) meets it.
NO_SUCH_ENDPOINT = "no such endpoint"


class FiletrackerError(Exception):
    """Root of every error raised by filetracker."""


class InvalidNameError(FiletrackerError, ValueError):
    """A file name (or versioned name) that the store does not accept."""


class InvalidVersionError(FiletrackerError, ValueError):
    """A version that is not a valid Unix timestamp or HTTP date."""


class NotFoundError(FiletrackerError):
    """The file, or the requested version of it, does not exist.

    ``reason`` is a server's one-line explanation when a server said so ("" otherwise):
    ``"no such endpoint: ..."`` means the URL, not the name, is wrong.
    """

    def __init__(self, message="", reason=""):
        super().__init__(message)
        self.reason = reason



class VersionNotFoundError(NotFoundError):
    """The file exists, but not at the version asked for (the message says which one there is)."""

class VersionConflictError(FiletrackerError):
    """The store holds a newer version (or a newer delete) than the request, or another
    content at the request's very version (an upload that lost the tie-break).

    ``version`` is the version that won, when the store said (``None`` otherwise).
    """

    def __init__(self, message="", version=None):
        super().__init__(message)
        self.version = version


class ContentConflictError(VersionConflictError):
    """Another content is stored at the upload's very version (equal versions keep one fixed
    content): this upload was not stored."""


class RemoteError(FiletrackerError):
    """A remote store answered with an error status.

    ``status`` is the HTTP status code (``None`` when no answer arrived at all,
    e.g. connection refused or a timeout) and ``reason`` the server's one-line
    explanation (its ``X-Exception`` header when it sent one).
    """

    def __init__(self, message, status=None, reason=None):
        super().__init__(message)
        self.status = status
        self.reason = reason
