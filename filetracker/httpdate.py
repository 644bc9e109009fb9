"""Versions on the wire: integer Unix timestamps as RFC 2822 HTTP dates."""

import email.utils

from filetracker.errors import InvalidVersionError

#: Versions must fit a signed 64-bit integer (SQLite, msgpack) and be >= 0.
MAX_VERSION = 2**62


def format_version(version):
    """Format an integer version as the 2.x protocol does (``formatdate``)."""
    return email.utils.formatdate(int(version))


def parse_version(text):
    """Parse an RFC 2822 / RFC 7231 date into an integer Unix timestamp.

    Raises :class:`InvalidVersionError` when ``text`` is not a valid date.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > 100:
        raise InvalidVersionError("invalid date: %r" % (text,))
    try:
        parsed = email.utils.parsedate_tz(text)
        if parsed is None:
            raise ValueError(text)
        value = int(email.utils.mktime_tz(parsed))
    except (ValueError, TypeError, OverflowError, IndexError):
        raise InvalidVersionError("invalid date: %r" % (text,)) from None
    if value < 0 or value > MAX_VERSION:
        raise InvalidVersionError("date out of range: %r" % (text,))
    return value
