"""``filetracker-admin import`` and ``filetracker-admin compare``: migration from a 2.x server.

    filetracker-admin [--cluster URL] import (--from URL | --from-dir DIR) [--prefix /path]
        [--parallel N] [--dry-run] [--verify] [--to URL] [--json] [--verbose]
    filetracker-admin [--cluster URL] compare (--from URL | --from-dir DIR) [--prefix /path]
        [--parallel N] [--to URL] [--json]

The target is the cluster's public protocol: ``--to URL`` (a gateway, or a
single ``filetracker-server``), else the global ``--cluster URL``, else
``FILETRACKER_ADMIN_URL``; a storage node there is refused at the start (usage
error: nodes refuse public writes and hold only their partitions), and a
target that refuses every write stops the run at its first refusal.  Exit
status: 0 when every file is copied (or skipped for a stated reason) /
identical, 1 when anything failed or differs, 2 for usage errors.

:func:`register` adds both subcommands to the ``filetracker-admin`` parser
(``cluster/admin/main.py``); each sets ``func`` to a ``(args) -> exit status``
callable.
"""

import argparse
import json
import os
import sys
import threading

import requests

from cluster.migrate.compare import run_compare
from cluster.migrate.copier import MAX_PARALLEL, run_import
from cluster.migrate.report import Progress
from cluster.migrate.sources import SourceError, normalize_prefix, open_source
from cluster.migrate.target import HttpTarget
from filetracker.server.base import NO_PUBLIC_WRITES, READ_ONLY
from filetracker.urls import safe_url, short_error

#: answers of a target that refuses every write: the run stops at the first one
WHOLE_TARGET_REFUSALS = (NO_PUBLIC_WRITES, READ_ONLY)


def _prefix(text):
    """argparse type of ``--prefix``: a bad one is a usage error (status 2), before anything runs."""
    try:
        normalize_prefix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _source_options(p, verb):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="from_url", metavar="URL", help="base URL of a running filetracker 2.x server")
    src.add_argument("--from-dir", metavar="DIR", help="data folder of a stopped 2.x server (holds links/, blobs/)")
    p.add_argument("--prefix", default="", type=_prefix, metavar="/PATH", help="only files under this folder")
    p.add_argument("--parallel", type=int, default=4, metavar="N", help="files %s at once (default 4)" % verb)
    p.add_argument("--to", metavar="URL", help="the cluster (gateway URL); default: --cluster / FILETRACKER_ADMIN_URL")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on standard output")


def register(subparsers):
    """Add ``import`` and ``compare`` to ``filetracker-admin``'s subparsers."""
    p = subparsers.add_parser("import", help="copy every file of a 2.x server into the cluster",
                              description="Copy every file of a filetracker 2.x server (over HTTP, or from its "
                                          "data folder) into the cluster, versions preserved. Files the cluster "
                                          "holds at the same or a newer version are skipped, so an interrupted "
                                          "run can simply be started again.")
    _source_options(p, "copied")
    p.add_argument("--dry-run", action="store_true", help="only count what would be copied")
    p.add_argument("--verify", action="store_true", help="afterwards compare every name (version, SHA-256)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per skipped file too")
    p.set_defaults(func=import_command)

    p = subparsers.add_parser("compare", help="compare a 2.x server with the cluster (version, SHA-256)",
                              description="Check every name of a 2.x store against the cluster by version and "
                                          "SHA-256 and list the differences.")
    _source_options(p, "compared")
    p.set_defaults(func=compare_command)


def _fail(message, status=1):
    """Leave with a one-line reason on standard error (status 2: usage error)."""
    print("filetracker-admin: %s%s" % ("error: " if status == 2 else "", message), file=sys.stderr)
    raise SystemExit(status)


def _target_url(args):
    url = args.to or getattr(args, "cluster", None) or os.environ.get("FILETRACKER_ADMIN_URL")
    if not url:
        _fail("no cluster given: use --to GATEWAY_URL or --cluster GATEWAY_URL", 2)
    if "," in url:
        # nodes' public protocol is read-only: the copy is written through one gateway
        _fail("import and compare talk to one gateway: give --to GATEWAY_URL", 2)
    return url


def _prepare(args):
    """``(source, target, entries)``, or leave with a one-line reason."""
    if not 1 <= args.parallel <= MAX_PARALLEL:
        _fail("--parallel must be from 1 to %d" % MAX_PARALLEL, 2)
    url = _target_url(args)
    try:
        r = requests.get(url.rstrip("/") + "/version/", timeout=10)
    except requests.RequestException as exc:
        _fail("cannot reach the cluster at %s: %s" % (safe_url(url), short_error(exc)))
    if r.status_code != 200:
        _fail("%s answered %d to /version/: not a filetracker endpoint" % (safe_url(url), r.status_code))
    if r.headers.get("X-Ring-Epoch") is not None:
        # only storage nodes mark every answer with their ring epoch; the gateway and a server do not
        _fail("%s is a storage node, not the gateway (it refuses public writes and serves only its own "
              "partitions): %s" % (safe_url(url), "--to must be the gateway's URL" if args.to else
                                   "give --to GATEWAY_URL (the default, --cluster, names a node)"), 2)
    try:
        source = open_source(args.from_url, args.from_dir, args.prefix)
        entries = source.entries()
    except (SourceError, ValueError) as exc:
        _fail(str(exc))
    return source, HttpTarget(url), entries


class ImportProgress(Progress):
    """:class:`Progress` of an import: the first failure that means the target refuses every
    write (a storage node, a read-only server) sets ``stop`` with one hint."""

    def __init__(self, total, target_url, **kwargs):
        super().__init__(total, **kwargs)
        self.target_url = target_url
        self.stop = threading.Event()
        self.refusal = None

    def file_done(self, name, outcome, nbytes=0, reason=None, version=None):
        if outcome == "failed" and reason and any(r in reason for r in WHOLE_TARGET_REFUSALS):
            with self._lock:
                first = self.refusal is None
                if first:
                    self.refusal = reason
                    self.stop.set()
            if first:
                self._line("filetracker-admin: %s refuses writes (%s): --to must be the gateway's URL; stopping"
                           % (self.target_url, reason.strip()))
            return
        super().file_done(name, outcome, nbytes, reason, version)


class CompareProgress(Progress):
    """:class:`Progress` of a compare: counts only; each difference is printed once, in the list on
    standard output at the end."""

    def file_done(self, name, outcome, nbytes=0, reason=None, version=None):
        super().file_done(name, "same", 0, None, version)


def import_command(args):
    source, target, entries = _prepare(args)
    err = sys.stderr
    print("import from %s into %s: %d files, %d at a time%s"
          % (source.describe(), safe_url(target.url), len(entries), args.parallel, " (dry run)" if args.dry_run else ""),
          file=err, flush=True)
    progress = ImportProgress(len(entries), safe_url(target.url), stream=err, verbose=args.verbose,
                              verb="would be copied" if args.dry_run else "copied")
    try:
        summary = run_import(source, target, entries, parallel=args.parallel, dry_run=args.dry_run,
                             progress=progress, stop=progress.stop)
    finally:
        progress.close()
    if progress.refusal is not None:
        summary.failed.append(("(run)", "stopped: %s refuses writes: %s"
                               % (safe_url(target.url), progress.refusal.strip())))
    result = {"import": summary.to_dict()}
    failed = bool(summary.failed)
    if args.verify and not args.dry_run and progress.refusal is None:
        progress = CompareProgress(len(entries), stream=err, verb="")
        try:
            cmp = run_compare(source, target, entries, parallel=args.parallel, progress=progress)
        finally:
            progress.close()
        result["compare"] = cmp.to_dict()
        failed = failed or bool(cmp.failing)
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(summary.text())
        if "compare" in result:
            print(cmp.text())
    return 1 if failed else 0


def compare_command(args):
    source, target, entries = _prepare(args)
    progress = CompareProgress(len(entries), stream=sys.stderr, verb="")
    try:
        cmp = run_compare(source, target, entries, parallel=args.parallel, progress=progress)
    finally:
        progress.close()
    print(json.dumps(cmp.to_dict(), indent=1, sort_keys=True) if args.json else cmp.text())
    return 1 if cmp.failing else 0


def main(argv=None):
    """Stand-alone entry (``python -m cluster.admin.importer``), the same as under ``filetracker-admin``."""
    p = argparse.ArgumentParser(prog="filetracker-admin")
    p.add_argument("--cluster", default=os.environ.get("FILETRACKER_ADMIN_URL"), metavar="URL")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
