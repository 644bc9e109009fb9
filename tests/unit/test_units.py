"""Byte sizes: the one parser every service option uses and the one formatter every tool prints."""

import argparse

import pytest

from filetracker.units import byte_count, human_bytes


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
