"""Name-by-name verification of a migration: every file of the old store
against what the target serves, by version and SHA-256.

The old side's SHA-256 comes from the blob name (data folder) or from hashing
the download (HTTP); the target side is always downloaded and hashed through
the public protocol, so what is checked is what clients will get.

Differences (``kind``):

* ``missing``: the target serves nothing for the name (absent, or deleted in
  the cluster: the public protocol cannot tell those apart);
* ``older``: the target serves an older version than the old store;
* ``content``: same version, different SHA-256;
* ``newer``: the target serves a newer version (written during the
  migration): reported, but not a failure;
* ``error``: one side could not be read.
"""

import threading
import time
from dataclasses import dataclass

from cluster.migrate.copier import worker_count
from cluster.migrate.sources import SourceError, Vanished
from cluster.migrate.target import TargetError

FAILING = ("missing", "older", "content", "error")


@dataclass(frozen=True)
class Difference:
    name: str
    kind: str
    detail: str = ""

    def line(self):
        return "%-8s %s%s" % (self.kind, self.name, (": " + self.detail) if self.detail else "")


@dataclass
class CompareResult:
    total: int = 0
    same: int = 0
    differences: list = None
    elapsed: float = 0.0

    @property
    def failing(self):
        return [d for d in self.differences if d.kind in FAILING]

    def text(self):
        lines = [d.line() for d in self.differences]
        counts = {}
        for d in self.differences:
            counts[d.kind] = counts.get(d.kind, 0) + 1
        lines.append("compared %d files in %.1fs: %d identical%s"
                     % (self.total, self.elapsed, self.same,
                        "".join(", %d %s" % (n, k) for k, n in sorted(counts.items()))))
        return "\n".join(lines)

    def to_dict(self):
        return {"total": self.total, "same": self.same, "elapsed_seconds": round(self.elapsed, 3),
                "differences": [{"name": d.name, "kind": d.kind, "detail": d.detail}
                                for d in self.differences]}


def compare_one(source, target, entry):
    """None when the target serves exactly the old file, else a :class:`Difference`."""
    try:
        got = target.fetch_digest(entry.name)
    except TargetError as exc:
        return Difference(entry.name, "error", "target: %s" % exc)
    try:
        if got is None:
            return Difference(entry.name, "missing")
        version, sha, _size = got
        old_version = entry.version if entry.version is not None else source.version(entry)
        if version < old_version:
            return Difference(entry.name, "older", "cluster %d < old %d" % (version, old_version))
        if version > old_version:
            return Difference(entry.name, "newer", "cluster %d > old %d" % (version, old_version))
        old_sha = entry.sha256
        if old_sha is None:
            with source.open(entry) as f:
                old_sha = f.digest()
                if f.version != old_version:  # changed on the old server meanwhile: compare again
                    return compare_one(source, target, entry)
        if old_sha != sha:
            return Difference(entry.name, "content", "sha256 cluster %s != old %s" % (sha, old_sha))
        return None
    except Vanished:
        return None  # gone from the old server: nothing left to compare
    except SourceError as exc:
        return Difference(entry.name, "error", "old server: %s" % exc)


def run_compare(source, target, entries, parallel=4, progress=None):
    result = CompareResult(total=len(entries), differences=[])
    lock = threading.Lock()
    it = iter(entries)
    started = time.monotonic()

    def worker():
        while True:
            with lock:
                entry = next(it, None)
            if entry is None:
                return
            diff = compare_one(source, target, entry)
            with lock:
                if diff is None:
                    result.same += 1
                else:
                    result.differences.append(diff)
            if progress is not None:
                progress.file_done(entry.name, "failed" if diff is not None and diff.kind in FAILING
                                   else "same", 0, diff.line() if diff else None)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(worker_count(parallel, len(entries)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed = time.monotonic() - started
    result.differences.sort(key=lambda d: d.name)
    return result
