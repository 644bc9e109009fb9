"""Versions on the wire: integer Unix timestamps as RFC 2822 HTTP dates."""

import datetime
import email.utils
import functools

from filetracker.errors import InvalidVersionError

#: The largest version: the last second of year 9999, the latest an HTTP date (``Last-Modified``)
#: can carry.  A larger one could be stored but never answered (``formatdate`` fails), so every
#: way in refuses it; it also fits SQLite's and msgpack's 64-bit integers.
MAX_VERSION = 253402300799


@functools.lru_cache(maxsize=4096)
def _formatted(version):
    return email.utils.formatdate(version)


def format_version(version):
    """Format an integer version as the 2.x protocol does (``formatdate``).

    Remembered per version (a pure function; a busy server formats the same
    few hot versions on every answer, and ``formatdate`` is a visible share
    of a gateway GET's CPU).
    """
    return _formatted(int(version))


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
        # a date that does not exist (31 Feb, 25:00) is refused, not rolled over into another
        # version; second 60 is a leap second, which RFC 7231 allows
        year, month, day, hour, minute, second = parsed[:6]
        datetime.datetime(year, month, day, hour, minute, 59 if second == 60 else second)
        value = int(email.utils.mktime_tz(parsed))
    except (ValueError, TypeError, OverflowError, IndexError):
        raise InvalidVersionError("invalid date: %r" % (text,)) from None
    if value < 0 or value > MAX_VERSION:
        raise InvalidVersionError("date out of range: %r" % (text,))
    return value
