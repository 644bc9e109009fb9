"""The listing with details: an extension of ``GET /list/<folder>`` (not 2.x protocol).

A client that adds ``details=1`` to the listing's query gets, instead of one
relative name a line, one ``name TAB version TAB size`` line per file, and the
answer header ``X-List-Format: details`` that says so.  ``version`` is the
integer Unix timestamp of the listed version and ``size`` its logical
(uncompressed) size in bytes, exactly what a ``HEAD`` of the file would say.
The FUSE mount asks for it so that ``ls -l`` of a folder costs one request,
not a listing plus one HEAD per file.

Everything else is as in the plain listing (same names, same order, same
``last_modified`` bound, tombstones omitted).  Without ``details=1`` the
answer is the plain listing, byte for byte.  A server that does not know the
parameter ignores it and answers plain names without the header; a client
must therefore look at the header, never guess from the lines.  Names never
contain control characters (:mod:`filetracker.names`), so TAB cannot occur
in a name.

Pure functions shared by the single server (and the nodes' public API) and
the gateway.
"""

#: Answer header that marks a listing with details, and its value.
FORMAT_HEADER = "X-List-Format"
DETAILS = "details"

_TRUE = frozenset(("1", "true", "yes"))


def wants_details(handler):
    """True when the request asked for the listing with details (``details=1``)."""
    value = handler.get_query_argument("details", "")
    return value.strip().lower() in _TRUE


def relative(name, prefix):
    """``name`` relative to the folder whose ``/``-terminated form is ``prefix``."""
    return name[len(prefix):] if name.startswith(prefix) else name.lstrip("/")


def plain_line(name, prefix):
    """One line of the plain (2.x) listing."""
    return relative(name, prefix) + "\n"


def details_line(name, prefix, version, size):
    """One line of the listing with details: ``name TAB version TAB size``."""
    return "%s\t%d\t%d\n" % (relative(name, prefix), int(version), int(size))
