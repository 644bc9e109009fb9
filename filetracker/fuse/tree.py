"""Directories implied by names: pure functions, no I/O.

The store has no folders.  A listing of folder ``F`` (the protocol's
``GET /list/F``) gives every name under ``F``, recursively, relative to ``F``
(``a.txt``, ``sub/b.txt``).  From one such listing we know the entries of
``F`` *and* of every folder below it, so ``ls -R`` or ``find`` over a tree
costs one request, not one per folder.

A name that is both a file and a folder prefix (``/a`` and ``/a/b`` both
stored) is shown as a folder, so everything under it stays reachable.
"""

import posixpath

FILE = "file"
DIR = "dir"


def join(folder, child):
    """``folder`` + ``/`` + ``child`` for absolute folder paths (``/`` included)."""
    return folder.rstrip("/") + "/" + child


def parent_and_base(path):
    """``('/a', 'b')`` for ``/a/b``; ``('/', 'a')`` for ``/a``."""
    parent, base = posixpath.split(path)
    return parent or "/", base


def folder_entries(folder, relative_names):
    """Group a recursive listing of ``folder`` into per-folder entries.

    Returns ``{folder_path: {child_name: FILE or DIR}}`` for ``folder`` and
    every folder implied below it.  Empty and malformed lines are skipped.
    ``folder`` itself is always present (possibly with no entries).
    """
    folder = folder.rstrip("/") or "/"
    result = {folder: {}}
    for rel in relative_names:
        rel = rel.strip("/")
        if not rel:
            continue
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            continue
        current = folder
        for i, part in enumerate(parts):
            entries = result.setdefault(current, {})
            is_last = i == len(parts) - 1
            if is_last:
                # A folder of the same name wins over the file.
                entries.setdefault(part, FILE)
            else:
                entries[part] = DIR
                current = join(current, part)
                result.setdefault(current, {})
    return result
