"""Byte sizes and durations: the parsers every service option uses and the one formatter every tool prints."""

import argparse

import pytest

from filetracker.units import MAX_SECONDS, MAX_TIMEOUT, byte_count, human_bytes, seconds, timeout_seconds


@pytest.mark.parametrize("text,expected", [
    ("0", 0),
    ("65536", 65536),
    ("512B", 512),
    ("64k", 64 << 10),
    ("64K", 64 << 10),
    ("2KiB", 2048),
    ("64M", 64 << 20),
    ("64MB", 64 << 20),
    ("64mib", 64 << 20),
    (" 40 M ", 40 << 20),
    ("1G", 1 << 30),
    ("1.5G", 3 << 29),
    ("0.5K", 512),
    ("1T", 1 << 40),
    (67108864, 67108864),  # a TOML integer reaches the parser as an int
])
def test_byte_count_accepts(text, expected):
    assert byte_count(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1", "-64M", "64X", "iB", "5iB", "1..5G", "64 M B x", "1e3"])
def test_byte_count_refuses_with_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a byte count"):
        byte_count(text)


@pytest.mark.parametrize("n,expected", [
    (None, "-"),
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (64 << 20, "64.0 MiB"),
    (3 << 30, "3.0 GiB"),
    (5 << 40, "5.0 TiB"),
    (2048 << 40, "2048.0 TiB"),
    (-2048, "-2.0 KiB"),
])
def test_human_bytes(n, expected):
    assert human_bytes(n) == expected


@pytest.mark.parametrize("text,expected", [("0", 0.0), ("1", 1.0), ("0.25", 0.25), (" 30 ", 30.0), (7, 7.0),
                                           ("1e6", 1e6), (str(MAX_SECONDS), MAX_SECONDS)])
def test_seconds_accepts(text, expected):
    assert seconds(text) == expected


@pytest.mark.parametrize("text,message", [
    ("soon", "not a number of seconds: 'soon'"),
    ("", "not a number of seconds: ''"),
    ("nan", "not a finite number of seconds: 'nan'"),   # passed every `<= 0` check: a loop spun
    ("inf", "not a finite number of seconds: 'inf'"),   # overflowed a wait: a thread died
    ("-inf", "not a finite number of seconds: '-inf'"),
    ("-1", "must not be negative: '-1'"),
    ("1e300", "too long: '1e300' (at most 315360000 seconds)"),
])
def test_seconds_refuses_with_a_usage_error(text, message):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        seconds(text)
    assert str(e.value) == message


def test_timeout_seconds_bound():
    assert timeout_seconds("0.5") == 0.5 and timeout_seconds("1000000") == MAX_TIMEOUT
    with pytest.raises(argparse.ArgumentTypeError, match=r"^too long: '1e10' \(at most 1000000 seconds\)$"):
        timeout_seconds("1e10")
    with pytest.raises(argparse.ArgumentTypeError, match="^not a finite number of seconds: 'nan'$"):
        timeout_seconds("nan")
