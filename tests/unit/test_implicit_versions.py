"""The version rule for uploads and deletes given without one (filetracker/client/implicit.py)."""

from filetracker.client import implicit

NOW = 1_700_000_000


def test_lead_reach_and_attempts():
    assert (implicit.LEAD, implicit.REACH, implicit.ATTEMPTS) == (1, 3, 10)


def test_after_a_conflict_the_upload_goes_a_second_past_the_winner():
    assert implicit.after_conflict(NOW, None, NOW) == NOW + 1          # another content at NOW
    assert implicit.after_conflict(NOW, NOW, NOW) == NOW + 1           # a delete at NOW
    assert implicit.after_conflict(NOW, NOW + 2, NOW) == NOW + 3       # a delete moved ahead
    assert implicit.after_conflict(NOW + 3, NOW + 1, NOW) == NOW + 4   # the server's is older
    assert implicit.after_conflict(NOW, NOW + 3, NOW) == NOW + 4       # a winner up to REACH ahead
    assert implicit.after_conflict(NOW, NOW + 4, NOW) is None          # farther: give up
    assert implicit.after_conflict(NOW, NOW + 30, NOW) is None         # a clock 30 s ahead


def test_a_newer_version_is_gone_past_only_from_this_second_to_reach_ahead():
    assert not implicit.goes_past(NOW - 1, NOW)    # an older second: a later write, it stays
    assert implicit.goes_past(NOW, NOW)
    assert implicit.goes_past(NOW + 1, NOW)        # a second up: an upload lost a tie
    assert implicit.goes_past(NOW + 3, NOW)
    assert not implicit.goes_past(NOW + 4, NOW)    # someone's explicit version (or clock)
    assert not implicit.goes_past(NOW + 30, NOW)   # the clock-skew fault test's 30 s


def test_an_upload_waits_until_it_is_at_most_a_second_ahead_of_the_clock():
    assert implicit.send_delay(NOW, NOW + 0.5) == 0.0
    assert implicit.send_delay(NOW + 1, NOW + 0.25) == 0.0
    assert implicit.send_delay(NOW + 2, NOW + 0.25) == 0.75
    assert implicit.send_delay(NOW + 4, NOW) == 3.0
