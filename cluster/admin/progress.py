"""Progress of a long admin operation: a tqdm bar on a terminal, plain lines otherwise.

The caller reports absolute figures (``done`` out of ``total`` units, plus a
short free-text ``detail``); this module computes the rate and the time left
and decides how to show them.  Plain lines are rate-limited (one every
``interval`` seconds, and the last one always) so logs stay readable.
"""

import time


class Progress:
    """``update(done, total, detail)`` as often as you like; ``close()`` at the end."""

    def __init__(self, stream, unit="file", tty=None, interval=2.0, desc="rebalance"):
        self.stream = stream
        self.unit = unit
        self.desc = desc
        self.interval = interval
        self.tty = stream.isatty() if tty is None else tty
        self._bar = None
        self._started = time.monotonic()
        self._last_line = 0.0
        self._last = None

    def update(self, done, total, detail=""):
        total = max(total, done)
        self._last = (done, total, detail)
        if self.tty:
            self._update_bar(done, total, detail)
        elif time.monotonic() - self._last_line >= self.interval:
            self._line(done, total, detail)

    def _update_bar(self, done, total, detail):
        if self._bar is None:
            from tqdm import tqdm  # only on a terminal
            self._bar = tqdm(total=total, unit=self.unit, desc=self.desc, file=self.stream,
                             dynamic_ncols=True, smoothing=0.3)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix_str(detail, refresh=True)

    def _line(self, done, total, detail):
        self._last_line = time.monotonic()
        elapsed = max(1e-6, self._last_line - self._started)
        rate = done / elapsed
        left = "?" if rate <= 0 else "%ds" % round((total - done) / rate)
        self.stream.write("%s: %d/%d %ss, %s, %.1f %ss/s, time left %s\n"
                          % (self.desc, done, total, self.unit, detail, rate, self.unit, left))
        self.stream.flush()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._last is not None and not self.tty:
            self._line(*self._last)
