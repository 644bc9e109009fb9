"""The version of an upload or a delete given without one ("now").

The 2.x client stamps such a request with the current second, and the server keeps the
newest version.  Our stores break a tie at an equal version by content (so that replicas
agree on one winner), so an upload without a version that loses the tie, or meets a delete
of its very second, is made again one second up.  That leaves a version ahead of the clock,
and the next request without a version in the same second would be older than it: an
upload would silently keep the other content (and be told its name), a delete would delete
nothing.  So a request without a version goes past a stored version that is not older than
this machine's current second, as long as that keeps it at most :data:`LEAD` seconds ahead
of the clock.  A version farther ahead is someone's explicit choice (or a clock far off),
and it wins, as with 2.x.

Pure functions of versions and "now" (integer Unix seconds); the client does the I/O.
"""

#: how far ahead of this machine's clock a request without a version may go to be the newest
LEAD = 60
#: at most this many requests for one upload or delete without a version (writers racing on
#: one name each go a second up; this bounds the chase)
ATTEMPTS = 10


def after_conflict(tried, stored, now):
    """The version to upload at next after a 409 to an upload at ``tried``: another content
    won the tie at ``tried``, or a delete at ``stored`` (``None`` when the server did not say)
    is not older.  ``None``: give up (the next version would be too far ahead of ``now``)."""
    nxt = max(tried, stored if stored is not None else tried) + 1
    return nxt if nxt - now <= LEAD else None


def goes_past(stored, now):
    """True when a request without a version, which found ``stored`` kept as newer, should go
    past it: ``stored`` is not older than the current second and at most :data:`LEAD` ahead
    (an upload then goes to ``stored + 1``; a delete to ``stored``, where a delete wins)."""
    return now <= stored and stored + 1 - now <= LEAD
