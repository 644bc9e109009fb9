"""Names and versioned names: exact values."""

import pytest

from filetracker.errors import FiletrackerError, InvalidNameError
from filetracker.names import (
    MAX_COMPONENT_BYTES,
    MAX_NAME_BYTES,
    check_folder,
    check_name,
    check_path,
    split_name,
    versioned_name,
)


@pytest.mark.parametrize("name, expected", [
    ("/a/b@12", ("/a/b", 12)),
    ("/a/b", ("/a/b", None)),
    ("/a/b@0", ("/a/b", 0)),
    ("/a@b/c@7", ("/a@b/c", 7)),
    ("/x@1732400000", ("/x", 1732400000)),
])
def test_split_name(name, expected):
    assert split_name(name) == expected


@pytest.mark.parametrize("name", ["/a@", "/a@x", "/a@-1", "/a@1.5", "/a@\u0661", "/a@ 1"])
def test_split_name_rejects_bad_versions(name):
    with pytest.raises(InvalidNameError):
        split_name(name)


def test_split_name_rejects_non_strings():
    with pytest.raises(InvalidNameError):
        split_name(b"/a")


def test_versioned_name():
    assert versioned_name("/a/b", 12) == "/a/b@12"
    assert versioned_name("/a/b", 0) == "/a/b@0"
    # digits in a string (a version read from a database or a URL), as the 2.x function took them
    assert versioned_name("/a/b", "12") == "/a/b@12" and versioned_name("/a", "007") == "/a@7"
    for bad in (-1, True, "-1", " 12", "1.0", "", "١٢", 1.0, None):
        with pytest.raises(InvalidNameError):
            versioned_name("/a", bad)


def test_errors_are_value_errors_and_filetracker_errors():
    with pytest.raises(ValueError):
        check_name("a")
    with pytest.raises(FiletrackerError):
        check_name("a")


@pytest.mark.parametrize("name, expected", [
    ("/a", ("/a", None)),
    ("/a/b/c.in@5", ("/a/b/c.in", 5)),
    ("/.hidden/x", ("/.hidden/x", None)),
    ("/a..b/c", ("/a..b/c", None)),
    ("/zażółć", ("/zażółć", None)),
])
def test_check_name_accepts(name, expected):
    assert check_name(name) == expected


@pytest.mark.parametrize("name", [
    "", "a", "a/b", "/", "//a", "/a//b", "/a/", "/a/./b", "/a/../b", "/..", "/.",
    "/a\x00b", "/a\nb", "/a\x7fb", "/a@b/c", "/" + "x" * (MAX_COMPONENT_BYTES + 1),
    "/" + "/".join(["x" * 200] * 6),
])
def test_check_name_rejects(name):
    with pytest.raises(InvalidNameError):
        check_name(name)


def test_check_name_version_not_allowed():
    with pytest.raises(InvalidNameError):
        check_name("/a@1", allow_version=False)
    assert check_name("/a", allow_version=False) == ("/a", None)


def test_length_limits_exact():
    longest = "/" + "/".join(["y" * 254] * 4)
    longest += "/" + "z" * (MAX_NAME_BYTES - len(longest) - 1)
    assert len(longest.encode()) == MAX_NAME_BYTES
    assert check_path(longest) == longest
    with pytest.raises(InvalidNameError):
        check_path(longest + "z")
    assert check_path("/" + "x" * MAX_COMPONENT_BYTES)


def test_check_folder():
    assert check_folder("/") == "/"
    assert check_folder("/a/b/") == "/a/b"
    assert check_folder("/a/b") == "/a/b"
    with pytest.raises(InvalidNameError):
        check_folder("a/")
    with pytest.raises(InvalidNameError):
        check_path("/", allow_root=False)
