"""Exact values of filetracker.ranges.parse_range."""

import pytest

from filetracker.ranges import RangeNotSatisfiable, content_range, parse_range, unsatisfied_range


@pytest.mark.parametrize("header,size,expected", [
    (None, 10, None),
    ("bytes=0-0", 10, (0, 0)),
    ("bytes=0-9", 10, (0, 9)),
    ("bytes=3-5", 10, (3, 5)),
    ("bytes=9-9", 10, (9, 9)),
    ("bytes=5-", 10, (5, 9)),
    ("bytes=0-", 10, (0, 9)),
    ("bytes=2-100", 10, (2, 9)),
    ("bytes=-1", 10, (9, 9)),
    ("bytes=-3", 10, (7, 9)),
    ("bytes=-10", 10, (0, 9)),
    ("bytes=-50", 10, (0, 9)),
    ("Bytes = 1-2", 10, (1, 2)),
    (" bytes=1 - 2 ", 10, (1, 2)),
    # ignored: serve the whole body with 200
    ("bytes=0-1,3-4", 10, None),
    ("bytes=0-1, 5-", 10, None),
    ("items=0-1", 10, None),
    ("bytes", 10, None),
    ("bytes=", 10, None),
    ("bytes=abc", 10, None),
    ("bytes=5-3", 10, None),
    ("bytes=a-3", 10, None),
    ("bytes=1-b", 10, None),
    ("bytes=-", 10, None),
    ("bytes=-x", 10, None),
    ("bytes=١-٢", 10, None),  # non-ASCII digits
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header,size", [
    ("bytes=10-", 10),
    ("bytes=10-20", 10),
    ("bytes=100-200", 10),
    ("bytes=-0", 10),
    ("bytes=0-", 0),
    ("bytes=-5", 0),
])
def test_unsatisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_header_values():
    assert content_range(3, 5, 10) == "bytes 3-5/10"
    assert unsatisfied_range(10) == "bytes */10"
