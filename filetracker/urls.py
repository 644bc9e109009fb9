"""Server URLs and connection errors as they appear in messages a user reads.

``safe_url(url)`` drops the ``user:token@`` of a URL (a token is never printed);
``short_error(exc)`` is one line saying why a connection failed (the errno text
when there is one).  Every user-facing message that names a server uses these:
the ``filetracker`` command, the FUSE client, ``filetracker-migrate``,
``filetracker-admin import``, a server's fallback to an old server.  No
third-party imports: the servers use this too.
"""

import re
import urllib.parse

_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def safe_url(url):
    """``url`` without credentials; host and port kept as written (IPv6 brackets, odd ports).
    A URL urllib cannot split (``http://[::1``) loses everything between its scheme and its
    last ``@``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:   # the message naming it must not fail in its place
        scheme, sep, rest = url.rpartition("://")
        return scheme + sep + rest.rpartition("@")[2] if "@" in rest else url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def short_error(exc):
    """A one-line cause of a failed connection or request: the errno text when there is one
    ("Connection refused"), "timed out" for a timeout, else the first line of the message."""
    text = str(exc)
    m = _ERRNO_TEXT.search(text)
    if m:
        return m.group(1).strip()
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:  # requests' Timeout family too
        return "timed out"
    return text.splitlines()[0][:200] if text else type(exc).__name__
