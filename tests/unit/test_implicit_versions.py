"""The version rule for uploads and deletes given without one (filetracker/client/implicit.py)."""

from filetracker.client import implicit

NOW = 1_700_000_000


def test_lead_and_attempts():
    assert (implicit.LEAD, implicit.ATTEMPTS) == (60, 10)


def test_after_a_conflict_the_upload_goes_a_second_past_the_winner():
    assert implicit.after_conflict(NOW, None, NOW) == NOW + 1          # another content at NOW
    assert implicit.after_conflict(NOW, NOW, NOW) == NOW + 1           # a delete at NOW
    assert implicit.after_conflict(NOW, NOW + 5, NOW) == NOW + 6       # a delete moved ahead
    assert implicit.after_conflict(NOW + 3, NOW + 1, NOW) == NOW + 4   # the server's is older
    assert implicit.after_conflict(NOW, NOW + 59, NOW) == NOW + 60     # at most LEAD ahead
    assert implicit.after_conflict(NOW, NOW + 60, NOW) is None         # farther: give up


def test_a_newer_version_is_gone_past_only_from_this_second_to_lead_ahead():
    assert not implicit.goes_past(NOW - 1, NOW)    # an older second: a later write, it stays
    assert implicit.goes_past(NOW, NOW)
    assert implicit.goes_past(NOW + 1, NOW)        # a second up: an upload lost a tie
    assert implicit.goes_past(NOW + 59, NOW)
    assert not implicit.goes_past(NOW + 60, NOW)   # someone's explicit version (or clock)
    assert not implicit.goes_past(NOW + 10 ** 9, NOW)
