"""The body of the gateway's ``GET /list/<folder>`` answer, from merged records.

The gateway's ListHandler gathers every live node's records and merges them
per name (:func:`filetracker.records.merge`); this module turns that merge
into the answer: names relative to the folder in name order, tombstones and
versions above the ``last_modified`` bound omitted.  Plain, it is the 2.x
listing byte for byte; with details (``details=1``, see
:mod:`filetracker.server.listing`) one ``name TAB version TAB size`` line per
file, the merged record's version and logical size.

An empty listing with details also says what the folder's own name is
(``X-List-Self``, see :mod:`filetracker.server.listing`), from a quorum read
of that name's record; without a read quorum the header is left out.

Migration mode adds the old server's names, of which the gateway knows no
version or size: such a listing is always sent plain (the mount then asks
HEADs, as with any server that does not offer details).
"""

from cluster.gateway.reads import quorum_read
from filetracker.server import listing


def render(merged, folder, max_version, details):
    """``(body, headers)`` of the listing of ``folder``.

    ``merged`` is ``{name: Record}``; ``details`` whether to send the listing
    with details.  ``headers`` are the extra answer headers to set.
    """
    prefix = folder if folder.endswith("/") else folder + "/"
    lines = []
    for name in sorted(merged):
        rec = merged[name]
        if rec.deleted or rec.version > max_version:
            continue
        if details:
            lines.append(listing.details_line(name, prefix, rec.version, rec.size))
        else:
            lines.append(listing.plain_line(name, prefix))
    headers = {listing.FORMAT_HEADER: listing.DETAILS} if details else {}
    return "".join(lines), headers


def wants_details(handler, migrating):
    """Whether to answer with details: asked for, and not in migration mode."""
    return not migrating and listing.wants_details(handler)


async def answer(services, merged, folder, max_version, details):
    """:func:`render`, plus ``X-List-Self`` for an empty listing with details."""
    body, headers = render(merged, folder, max_version, details)
    own = listing.self_name(folder)
    if details and not body and own is not None:
        read = await quorum_read(services, own)
        if read.enough:
            headers[listing.SELF_HEADER] = listing.self_value(read.winner, max_version)
    return body, headers
