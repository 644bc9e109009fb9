"""Wire dates: exact values."""

import pytest

from filetracker.errors import InvalidVersionError
from filetracker.httpdate import MAX_VERSION, format_version, parse_version


def test_format_exact():
    assert format_version(0) == "Thu, 01 Jan 1970 00:00:00 -0000"
    assert format_version(1732400000) == "Sat, 23 Nov 2024 22:13:20 -0000"


@pytest.mark.parametrize("text, value", [
    ("Sat, 23 Nov 2024 22:13:20 -0000", 1732400000),
    ("Sat, 23 Nov 2024 22:13:20 GMT", 1732400000),  # RFC 7231 IMF-fixdate
    ("Sat, 23 Nov 2024 23:13:20 +0100", 1732400000),
    ("23 Nov 2024 22:13:20 +0000", 1732400000),
    ("Thu, 01 Jan 1970 00:00:00 -0000", 0),
    ("Sat, 31 Dec 2016 23:59:60 GMT", 1483228800),  # a leap second: RFC 7231 allows second 60
    ("Thu, 29 Feb 2024 00:00:00 GMT", 1709164800),
])
def test_parse_exact(text, value):
    assert parse_version(text) == value


@pytest.mark.parametrize("version", [0, 1, 1732400000, 2**31 + 5, 4102444800])
def test_round_trip(version):
    assert parse_version(format_version(version)) == version


@pytest.mark.parametrize("text", ["", "   ", "yesterday", "12345", "Sat, 99 Foo 2024", None, 123,
                                  "Thu, 01 Jan 1969 00:00:00 -0000", "x" * 101,
                                  # dates that do not exist were rolled over (31 Feb -> 3 Mar)
                                  "Tue, 31 Feb 2026 00:00:00 GMT", "Thu, 29 Feb 2025 00:00:00 GMT",
                                  "Sat, 28 Nov 2026 24:00:00 GMT", "Sat, 28 Nov 2026 23:60:00 GMT",
                                  "Sat, 28 Nov 2026 23:59:61 GMT", "Sat, 31 Nov 2026 00:00:00 GMT"])
def test_parse_rejects(text):
    with pytest.raises(InvalidVersionError):
        parse_version(text)


def test_max_version_is_the_last_second_an_http_date_carries():
    assert MAX_VERSION == 253402300799
    assert format_version(MAX_VERSION) == "Fri, 31 Dec 9999 23:59:59 -0000"
    assert parse_version("Fri, 31 Dec 9999 23:59:59 -0000") == MAX_VERSION
    with pytest.raises(InvalidVersionError):
        parse_version("Sat, 01 Jan 10000 00:00:00 -0000")
