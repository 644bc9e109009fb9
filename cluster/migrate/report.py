"""Progress and summaries of a migration run.

On a terminal a tqdm bar counts files (with rate and time left) and shows
bytes and byte rate beside it; otherwise plain lines: one per copied or
failed file (so a log, or a test, can tell exactly what was copied) and a
progress line every few seconds.  Every method is thread-safe.
"""

import sys
import threading
import time
from dataclasses import dataclass, field

from filetracker.units import human_bytes

#: skip reasons, in the order the summary lists them
SKIP_REASONS = {
    "present": "already in the cluster at the same version",
    "newer": "the cluster holds a newer version",
    "deleted": "deleted in the cluster (the delete wins)",
    "vanished": "gone from the old server since the listing",
}


@dataclass
class Summary:
    """Outcome of one run.  ``failed`` is a list of ``(name, reason)``."""

    total: int = 0
    copied: int = 0
    copied_bytes: int = 0
    would_copy: int = 0
    skipped: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    elapsed: float = 0.0
    dry_run: bool = False

    @property
    def skipped_total(self):
        return sum(self.skipped.values())

    def files_per_second(self):
        return self.copied / self.elapsed if self.elapsed > 0 else 0.0

    def bytes_per_second(self):
        return self.copied_bytes / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self):
        return {
            "total": self.total, "copied": self.copied, "copied_bytes": self.copied_bytes,
            "would_copy": self.would_copy, "skipped": dict(self.skipped),
            "failed": [{"name": n, "reason": r} for n, r in self.failed],
            "elapsed_seconds": round(self.elapsed, 3), "dry_run": self.dry_run,
            "files_per_second": round(self.files_per_second(), 2),
            "bytes_per_second": round(self.bytes_per_second(), 1),
        }

    def text(self):
        lines = []
        if self.dry_run:
            lines.append("dry run: %d of %d files would be copied" % (self.would_copy, self.total))
        else:
            lines.append("copied %d of %d files (%s) in %.1fs: %.1f files/s, %s/s"
                         % (self.copied, self.total, human_bytes(self.copied_bytes), self.elapsed,
                            self.files_per_second(), human_bytes(self.bytes_per_second())))
        lines.append("skipped %d" % self.skipped_total)
        for reason, label in SKIP_REASONS.items():
            if self.skipped.get(reason):
                lines.append("  %d %s" % (self.skipped[reason], label))
        lines.append("failed %d" % len(self.failed))
        for name, reason in self.failed:
            lines.append("  %s: %s" % (name, reason))
        return "\n".join(lines)


class Progress:
    """Reports per-file outcomes of a run of ``total`` files to ``stream``."""

    def __init__(self, total, stream=None, interactive=None, interval=2.0, verbose=False, verb="copied"):
        self.stream = stream or sys.stderr
        if interactive is None:
            interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interactive = interactive
        self.total = total
        self.interval = interval
        self.verbose = verbose
        self.verb = verb
        self.done = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()
        self._bar = None
        if interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="file", file=self.stream, dynamic_ncols=True,
                             smoothing=0.1)

    def _line(self, text):
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def file_done(self, name, outcome, nbytes=0, reason=None, version=None):
        """Record one file: ``outcome`` is copied / would-copy / a skip reason / failed;
        ``nbytes`` None when the size is not known (printed as ``?``)."""
        with self._lock:
            self.done += 1
            self.bytes += nbytes or 0
            at = "@%d" % version if version is not None else ""
            if outcome == "failed":
                self._line("failed %s%s: %s" % (name, at, reason))
            elif outcome in ("copied", "would-copy") and not self.interactive:
                self._line("%s %s%s %s" % (outcome, name, at, "?" if nbytes is None else nbytes))
            elif self.verbose:
                self._line("skipped %s%s: %s" % (name, at, SKIP_REASONS.get(outcome, outcome)))
            now = time.monotonic()
            if self._bar is not None:
                self._bar.update(1)
                rate = self.bytes / max(now - self.started, 1e-6)
                if now - self._last >= 0.5:
                    self._bar.set_postfix_str("%s, %s/s" % (human_bytes(self.bytes), human_bytes(rate)),
                                              refresh=False)
                    self._last = now
            elif now - self._last >= self.interval:
                self._last = now
                self._line(self.status_line(now))

    def status_line(self, now=None):
        elapsed = max((now or time.monotonic()) - self.started, 1e-6)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0
        if not self.verb:  # compare: no bytes to speak of
            return "progress: %d/%d files, %.1f files/s, %.0fs left" % (self.done, self.total, rate, left)
        return ("progress: %d/%d files, %s %s, %.1f files/s, %s/s, %.0fs left"
                % (self.done, self.total, human_bytes(self.bytes), self.verb, rate,
                   human_bytes(self.bytes / elapsed), left))

    def close(self):
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
