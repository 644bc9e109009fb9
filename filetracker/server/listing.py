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

One more thing for a lookup in one request: when the listing with details
is empty, the answer also says what the folder's own name is, in the header
``X-List-Self``: ``file <version> <size>`` when it names a live file within
the ``last_modified`` bound, else ``none``.  (A non-empty listing makes the
name a folder whichever it is, so then the header is not sent.)  A mount that
does not know whether a path is a file or a folder thus learns it from one
listing instead of a HEAD followed by a listing.  A server that cannot tell
omits the header; the client then asks a HEAD.

Pure functions shared by the single server (and the nodes' public API) and
the gateway.
"""

#: Answer header that marks a listing with details, and its value.
FORMAT_HEADER = "X-List-Format"
DETAILS = "details"
#: Answer header of an empty listing with details: what the folder's own name is.
SELF_HEADER = "X-List-Self"

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


def self_name(folder):
    """The name a folder path would have as a file (None for the root)."""
    name = folder.rstrip("/")
    return name or None


def self_value(record, max_version):
    """The ``X-List-Self`` value for the folder's own ``record`` (or None: no record)."""
    if record is None or record.deleted or record.version > max_version:
        return "none"
    return "file %d %d" % (int(record.version), int(record.size))

