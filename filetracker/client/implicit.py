"""The version of an upload or a delete given without one ("now").

The 2.x client stamps such a request with the current second, and the server keeps the
newest version.  Our stores break a tie at an equal version by content (so that replicas
agree on one winner), so an upload without a version that loses the tie, or meets a delete
of its very second, is made again one second up.  That leaves a version ahead of the clock,
and the next request without a version in the same second would be older than it: an
upload would silently keep the other content (and be told its name), a delete would delete
nothing.

So a request without a version goes past a stored version from the current second up to
:data:`REACH` seconds ahead of the clock (versions such uploads made, here or on a machine
whose clock is a little ahead).  An upload is never sent more than :data:`LEAD` second ahead
of the clock: it waits for the clock instead (:func:`send_delay`), as the FUSE client does,
so a burst of uploads of one name takes about a second per upload past the first two but
keeps each one, in order.  A version farther ahead than :data:`REACH` is someone's explicit
choice or a clock far off: it wins, last-writer-wins by version, as with 2.x.

Pure functions of versions and "now" (Unix seconds); the client does the I/O.
"""

#: an upload without a version is sent at most this many seconds ahead of the clock
LEAD = 1
#: a stored version at most this many seconds ahead of the clock is gone past (it was made
#: by uploads within one second); a version farther ahead stays
REACH = 3
#: at most this many requests for one upload or delete without a version (writers racing on
#: one name each go a second up; this bounds the chase)
ATTEMPTS = 10


def after_conflict(tried, stored, now):
    """The version to upload at next after a 409 to an upload at ``tried``: another content
    won the tie at ``tried``, or a delete at ``stored`` (``None`` when the server did not say)
    is not older.  ``None``: give up (the winner is farther ahead of ``now`` than :data:`REACH`)."""
    winner = max(tried, stored if stored is not None else tried)
    return winner + 1 if winner - now <= REACH else None


def goes_past(stored, now):
    """True when a request without a version, which found ``stored`` kept as newer, should go
    past it: ``stored`` is from the current second up to :data:`REACH` ahead (an upload then
    goes to ``stored + 1``; a delete to ``stored``, where a delete wins)."""
    return now <= stored <= now + REACH


def send_delay(version, now):
    """Seconds to wait before sending an upload at ``version`` (``now``: the clock, a float),
    so that it is at most :data:`LEAD` ahead."""
    return max(0.0, version - LEAD - now)
