"""The bulk copy: every file of a source into the target, version preserved.

Resumable by construction: before copying a file the target is asked which
version it holds, and a file it holds at the same or a newer version is
skipped.  An interrupted run, started again, therefore copies only what is
still missing (nothing twice).  Whatever the target holds that is newer
(written or deleted by clients during the migration) is never replaced: the
target's merge rule refuses older writes, and this module only counts them.

``parallel`` worker threads pull files from one shared list; memory per
worker is one chunk (bodies are streamed from source to target).
"""

import threading
import time

from cluster.migrate.report import Summary
from cluster.migrate.sources import SourceError, Vanished
from cluster.migrate.target import TargetError


def import_one(source, target, entry, dry_run=False):
    """Copy one entry.  Returns ``(outcome, bytes, version, reason)`` where outcome is
    ``copied``, ``would-copy``, a skip reason (``present``, ``newer``, ``deleted``,
    ``vanished``) or ``failed``; ``bytes`` is None for ``would-copy`` (a dry run does not
    read the file, so its size is not known)."""
    try:
        held = target.version(entry.name)
        version = entry.version
        if held is not None and version is None:
            version = source.version(entry)  # HTTP: ask the old server only when it matters
        if held is not None and held >= version:
            return ("present" if held == version else "newer"), 0, version, None
        if dry_run:
            return "would-copy", None, version, None
        with source.open(entry) as f:
            if held is not None and held >= f.version:
                return ("present" if held == f.version else "newer"), 0, f.version, None
            try:
                result = target.put(entry.name, f.version, f, size=f.size, sha256=f.expected_sha256)
            except TargetError as exc:
                if f.error is not None:  # the upload broke because the source did
                    raise f.error from None
                raise exc
            if f.error is not None:
                raise f.error
            if result.outcome != "copied":
                return result.outcome, 0, f.version, None
            return "copied", f.bytes_read, f.version, None
    except Vanished:
        return "vanished", 0, entry.version, None
    except (SourceError, TargetError) as exc:
        return "failed", 0, entry.version, str(exc)


#: the most files handled at once: each is a thread with its own connections to both stores
MAX_PARALLEL = 256


def worker_count(parallel, total):
    """Threads for ``total`` files at ``parallel`` at once: never more than there are files,
    and at least one (it finds the list empty and ends)."""
    return max(1, min(parallel, total))


def run_import(source, target, entries, parallel=4, dry_run=False, progress=None, stop=None):
    """Copy ``entries`` (from ``source.entries()``) with ``parallel`` threads; -> :class:`Summary`.

    ``progress`` (a :class:`cluster.migrate.report.Progress`) gets every
    outcome; ``stop`` (a :class:`threading.Event`) ends the run early (Ctrl-C).
    """
    summary = Summary(total=len(entries), dry_run=dry_run)
    lock = threading.Lock()
    it = iter(entries)
    stop = stop or threading.Event()
    started = time.monotonic()

    def worker():
        while not stop.is_set():
            with lock:
                entry = next(it, None)
            if entry is None:
                return
            outcome, nbytes, version, reason = import_one(source, target, entry, dry_run)
            with lock:
                if outcome == "copied":
                    summary.copied += 1
                    summary.copied_bytes += nbytes
                elif outcome == "would-copy":
                    summary.would_copy += 1
                elif outcome == "failed":
                    summary.failed.append((entry.name, reason))
                else:
                    summary.skipped[outcome] = summary.skipped.get(outcome, 0) + 1
            if progress is not None:
                progress.file_done(entry.name, outcome, nbytes, reason, version)

    threads = [threading.Thread(target=worker, name="import-%d" % i, daemon=True)
               for i in range(worker_count(parallel, len(entries)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(5)
        summary.failed.append(("(run)", "interrupted"))
    summary.elapsed = time.monotonic() - started
    summary.failed.sort()
    return summary
