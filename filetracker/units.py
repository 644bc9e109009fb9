"""Byte sizes and durations as people write and read them: one parser of each for every tool.

Pure functions, no I/O.  Every multiple is a power of 1024 (``64M`` and
``64MiB`` are both 64 * 2**20): these are disk and cache sizes, and the
services always read them that way.  The cache cleaner's chained form
(``1G512M``, the 2.x tool's syntax) is its own: see
:mod:`filetracker.cli.cache_cleaner`.
"""

import argparse
import math
import re

_UNITS = " KMGT"
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)


def byte_count(text):
    """argparse type: bytes from ``65536``, ``64K``, ``64M``, ``1.5G``, ``2KiB``, ``512B``, ``1T``.

    The unit letter is case-insensitive and may be followed by ``B`` or
    ``iB``; a fraction is allowed and rounded down to whole bytes.  Anything
    else, including a negative number, raises ``argparse.ArgumentTypeError``
    (argparse turns it into a usage error naming the option).
    """
    m = _SIZE.fullmatch(str(text))
    if not m or (m.group(3) and m.group(3).lower() == "ib" and not m.group(2)):
        raise argparse.ArgumentTypeError(
            "not a byte count: %r (use e.g. 65536, 64K, 64M, 1.5G)" % (text,))
    return int(float(m.group(1)) * (1 << (10 * _UNITS.index(m.group(2).upper() or " "))))


#: the longest interval or time-to-live a service takes (10 years): beyond it waits overflow
MAX_SECONDS = 10 * 365 * 24 * 3600.0
#: the longest network timeout (about 11.6 days): a socket's wait is counted in int32
#: milliseconds by poll(), so much longer values fail deep inside a request
MAX_TIMEOUT = 1_000_000.0


def _duration(text, maximum):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % (text,)) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("not a finite number of seconds: %r" % (text,))
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative: %r" % (text,))
    if value > maximum:
        raise argparse.ArgumentTypeError("too long: %r (at most %d seconds)" % (text, maximum))
    return value


def seconds(text):
    """argparse type: an interval or time-to-live in seconds, ``0 <= value <= MAX_SECONDS``.

    ``nan``, ``inf`` and anything that is not a number raise
    ``argparse.ArgumentTypeError``; whether 0 is allowed is the option's own check.
    """
    return _duration(text, MAX_SECONDS)


def timeout_seconds(text):
    """argparse type: a timeout in seconds, ``0 <= value <= MAX_TIMEOUT`` (as :func:`seconds`)."""
    return _duration(text, MAX_TIMEOUT)


def human_bytes(n):
    """``'0 B'``, ``'1023 B'``, ``'1.5 KiB'``, ``'3.0 GiB'``: one decimal and the largest
    binary unit below 1024 of it (TiB at most); ``'-'`` for None (unknown)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0
    return "%.1f TiB" % size
