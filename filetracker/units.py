"""Byte sizes as people write and read them: one parser and one formatter for every tool.

Pure functions, no I/O.  Every multiple is a power of 1024 (``64M`` and
``64MiB`` are both 64 * 2**20): these are disk and cache sizes, and the
services always read them that way.  The cache cleaner's chained form
(``1G512M``, the 2.x tool's syntax) is its own: see
:mod:`filetracker.cli.cache_cleaner`.
"""

import argparse
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
