"""HTTP ``Range: bytes=...`` parsing (RFC 9110 section 14): pure, no I/O.

Only a single byte range is honoured.  :func:`parse_range` answers

* ``None``: ignore the header and send the whole body with 200 (no header,
  another unit, a syntactically invalid value, or several ranges);
* ``(start, end)``: inclusive byte offsets to send with 206;
* raises :class:`RangeNotSatisfiable`: answer 416 with
  ``Content-Range: bytes */<size>`` (a well-formed range that selects nothing).
"""

from filetracker.errors import FiletrackerError


class RangeNotSatisfiable(FiletrackerError):
    """A well-formed single range that selects no byte of the representation."""


def _digits(text):
    return text.isascii() and text.isdigit()


#: a byte position no body reaches (any number of more than 19 digits is read as this)
_BEYOND = 10 ** 19


def _number(digits):
    """The value of a string of ASCII digits; :data:`_BEYOND` for one beyond any size
    (int() refuses more than 4300 digits: a 500 before)."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 19 else _BEYOND


def parse_range(header, size):
    """Parse ``header`` (the Range value or None) for a body of ``size`` bytes."""
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if "," in spec:
        return None  # several ranges: serving the whole body is always allowed
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash:
        return None
    if first == "":
        # Suffix range: the last N bytes.
        if not _digits(last):
            return None
        length = _number(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable("range %r selects nothing of %d bytes" % (header, size))
        return max(0, size - length), size - 1
    if not _digits(first) or (last and not _digits(last)):
        return None
    start = _number(first)
    end = _number(last) if last else size - 1
    if last and end < start:
        return None  # invalid per the RFC: ignore
    if start >= size:
        raise RangeNotSatisfiable("range %r starts past the end (%d bytes)" % (header, size))
    return start, min(end, size - 1)


def content_range(start, end, size):
    """The ``Content-Range`` value of a 206 answer."""
    return "bytes %d-%d/%d" % (start, end, size)


def unsatisfied_range(size):
    """The ``Content-Range`` value of a 416 answer."""
    return "bytes */%d" % size
