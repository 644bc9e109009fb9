"""``filetracker-migrate FILES_DIR URL [--root DIR] [-s]``: upload a tree of plain files.

Each file under FILES_DIR is stored as ``/<path relative to --root>`` (default:
FILES_DIR itself) with its modification time as its version, so running it
again uploads nothing new over newer files.  A progress bar (bytes) on
standard error unless ``--silent``.  Exit status 1 when any upload failed
(each failure is reported on standard error) or when the server cannot be
reached at all (one line, before anything is uploaded); 2 when FILES_DIR is
not a readable folder or not under ``--root``.
"""

import argparse
import os
import sys

import requests

from filetracker.client import Client
from filetracker.errors import FiletrackerError
from filetracker.names import versioned_name
from filetracker.urls import safe_url, short_error

#: seconds the reachability check at start waits for the server
CONNECT_TIMEOUT = 30


def _unreadable_folder(path):
    """None when ``path`` is a folder we can list, else why not."""
    if not os.path.exists(path):
        return "no such folder"
    if not os.path.isdir(path):
        return "not a folder"
    try:
        os.listdir(path)
    except OSError as e:
        return "cannot read it (%s)" % (e.strerror or e)
    return None


def _inside(path, folder):
    """Whether ``path`` is ``folder`` or lies under it (as written, after making both absolute)."""
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def iter_files(top, onerror=None):
    """Every regular file under ``top``, sorted; a symbolic link to a file counts as that file
    (its content and mtime are uploaded, as 2.x did), a link to a folder is not followed."""
    for folder, dirs, files in os.walk(top, onerror=onerror):
        dirs.sort()
        for base in sorted(files):
            path = os.path.join(folder, base)
            if os.path.isfile(path):
                yield path


def main(argv=None):
    p = argparse.ArgumentParser(prog="filetracker-migrate", description="Upload a tree of files to a server.")
    p.add_argument("files", metavar="FILES_DIR", help="the tree to upload")
    p.add_argument("url", metavar="URL", help="URL of the filetracker server")
    p.add_argument("--root", help="folder that corresponds to the store root (default: FILES_DIR)")
    p.add_argument("-s", "--silent", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    root = args.root if args.root is not None else args.files
    problem = _unreadable_folder(args.files)
    if problem:
        print("filetracker-migrate: error: %s: %s" % (args.files, problem), file=sys.stderr)
        return 2
    if not _inside(args.files, root):
        # every name would start with "/..": one refusal per file, nothing uploaded
        print("filetracker-migrate: error: --root %s must be FILES_DIR or a folder above it (names are paths "
              "relative to it)" % args.root, file=sys.stderr)
        return 2
    try:   # once, before anything else: an unreachable server is one error, not one per file
        requests.get(args.url.rstrip("/") + "/version/", timeout=CONNECT_TIMEOUT).close()
    except requests.RequestException as e:   # any answer will do: per-file errors say what is wrong
        print("ERROR when uploading to %s: cannot reach it (%s); nothing uploaded"
              % (safe_url(args.url), short_error(e)), file=sys.stderr)
        return 1
    client = Client(local_store=None, remote_url=args.url)
    walk_errors = []
    paths = list(iter_files(args.files, walk_errors.append))
    for e in walk_errors:
        print("ERROR when reading %s:\n%s" % (e.filename, e.strerror or e), file=sys.stderr)
    total = sum(os.path.getsize(path) for path in paths)
    bar = None
    if not args.silent:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="Uploading files",
                   file=sys.stderr)
    failed = 0
    try:
        for path in paths:
            st = os.stat(path)
            name = "/" + os.path.relpath(path, root).replace(os.sep, "/")
            try:
                client.put_file(versioned_name(name, int(st.st_mtime)), path, to_local_store=False)
            except (FiletrackerError, ValueError, OSError) as e:
                failed += 1
                print("ERROR when uploading %s:\n%s" % (path, e), file=sys.stderr)
            if bar is not None:
                bar.update(st.st_size)
    finally:
        if bar is not None:
            bar.close()
    return 1 if failed or walk_errors else 0


if __name__ == "__main__":
    sys.exit(main())
