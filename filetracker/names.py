"""File names and versioned names: pure functions, no I/O.

A name is an absolute, ``/``-separated path such as ``/problems/abc/in/1.in``.
A versioned name appends ``@`` and an integer version (a Unix timestamp):
``/problems/abc/in/1.in@1732400000``.
"""

from filetracker.errors import InvalidNameError

#: Longest accepted unversioned name, in bytes of UTF-8.
MAX_NAME_BYTES = 1024
#: Longest accepted path component, in bytes of UTF-8 (a common filesystem limit).
MAX_COMPONENT_BYTES = 255


def split_name(name):
    """Split ``name`` into ``(unversioned_name, version)``.

    ``version`` is an ``int`` or ``None`` when the name carries no version.
    Raises :class:`InvalidNameError` for a malformed version suffix.
    """
    if not isinstance(name, str):
        raise InvalidNameError("file name must be a string, not %s" % type(name).__name__)
    base, sep, version = name.rpartition("@")
    if not sep:
        return name, None
    # more than 19 significant digits is beyond any version (and int() refuses over 4300)
    if not version.isdigit() or not version.isascii() or len(version.lstrip("0")) > 19:
        raise InvalidNameError("invalid version in file name %r" % _shortened(name))
    return base, int(version)


def _shortened(text, limit=200):
    """``text`` cut to ``limit`` characters for a message (a name may be 16 KiB of URL)."""
    return text if len(text) <= limit else text[:limit] + "..."


def versioned_name(unversioned_name, version):
    """Return ``unversioned_name@version``.

    ``version`` is a non-negative int, or a string of its decimal digits (as read from
    a database column or a URL; the 2.x function formatted whatever it was given).
    Anything else (a bool, a float, None, a sign or spaces) raises :class:`InvalidNameError`:
    it would make a name that :func:`split_name` cannot read back.
    """
    if isinstance(version, str) and version.isascii() and version.isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidNameError("version must be a non-negative integer, not %r" % (version,))
    return "%s@%d" % (unversioned_name, version)


def check_name(name, allow_version=True):
    """Validate ``name`` and return ``(unversioned_name, version)``.

    A valid unversioned name is absolute, has no empty, ``.`` or ``..``
    components, no ``@``, no NUL or control characters, is not longer than
    :data:`MAX_NAME_BYTES` and ends in a file component (no trailing ``/``).
    Raises :class:`InvalidNameError` (a ``ValueError``) with the reason.
    """
    uname, version = split_name(name)
    if version is not None and not allow_version:
        raise InvalidNameError("a versioned name is not allowed here: %r" % name)
    check_path(uname)
    if uname == "/":
        raise InvalidNameError("file name must not be the root folder")
    return uname, version


def check_path(path, allow_root=True):
    """Validate an unversioned absolute path (a file name or a folder).

    The rules of :func:`check_name`, except that ``/`` alone is allowed when
    ``allow_root`` (a folder to list).  Returns ``path``.
    """
    if not isinstance(path, str):
        raise InvalidNameError("file name must be a string")
    if not path.startswith("/"):
        raise InvalidNameError("file name must be absolute (start with '/'): %r" % path)
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError("file name is not valid UTF-8: %r" % path) from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidNameError("file name longer than %d bytes" % MAX_NAME_BYTES)
    for ch in path:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise InvalidNameError("file name contains a control character: %r" % path)
    if "@" in path:
        raise InvalidNameError("file name must not contain '@' (it starts a version): %r" % path)
    if path == "/":
        if allow_root:
            return path
        raise InvalidNameError("file name must not be the root folder")
    components = path[1:].split("/")
    for i, comp in enumerate(components):
        if comp == "" and i == len(components) - 1 and len(components) > 1:
            raise InvalidNameError("file name must not end with '/': %r" % path)
        if comp == "":
            raise InvalidNameError("file name has an empty component: %r" % path)
        if comp in (".", ".."):
            raise InvalidNameError("file name must not contain '.' or '..' components: %r" % path)
        if len(comp.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidNameError("file name component longer than %d bytes" % MAX_COMPONENT_BYTES)
    return path


def check_folder(path):
    """Validate a folder path for listing: like a name, a trailing ``/`` allowed."""
    if isinstance(path, str) and len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return check_path(path, allow_root=True)
