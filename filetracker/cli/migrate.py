"""``filetracker-migrate FILES_DIR URL [--root DIR] [-s]``: upload a tree of plain files.

Each file under FILES_DIR is stored as ``/<path relative to --root>`` (default:
FILES_DIR itself) with its modification time as its version, so running it
again uploads nothing new over newer files.  A progress bar (bytes) on
standard error unless ``--silent``.  Exit status 1 when any upload failed
(each failure is reported on standard error).
"""

import argparse
import os
import sys

from filetracker.client import Client
from filetracker.errors import FiletrackerError
from filetracker.names import versioned_name


def iter_files(top):
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        for base in sorted(files):
            path = os.path.join(folder, base)
            if os.path.isfile(path) and not os.path.islink(path):
                yield path


def main(argv=None):
    p = argparse.ArgumentParser(prog="filetracker-migrate", description="Upload a tree of files to a server.")
    p.add_argument("files", metavar="FILES_DIR", help="the tree to upload")
    p.add_argument("url", metavar="URL", help="URL of the filetracker server")
    p.add_argument("--root", help="folder that corresponds to the store root (default: FILES_DIR)")
    p.add_argument("-s", "--silent", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    root = args.root if args.root is not None else args.files
    client = Client(local_store=None, remote_url=args.url)
    paths = list(iter_files(args.files))
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
