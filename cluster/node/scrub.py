"""The scrubber: re-hash every stored blob, rate-limited, to find bitrot nobody reads.

One :meth:`Scrubber.scrub_pass` walks every live record (by name, in pages, no
cursor held open), opens its blob and hashes it with
:meth:`cluster.node.integrity.Integrity.check` ``force=True`` (the LRU of
verified reads is ignored: the point is to catch bytes that rotted after they
were last read).  A blob shared by several names is hashed once per pass (a
bounded memory of the blobs seen).  A corrupt blob is quarantined and queued
for repair by the check itself; a record whose blob is missing (quarantined
earlier, repair not yet done) is queued for repair too.

Reads are charged to a token bucket of ``rate`` bytes/s, so a pass costs at
most that much disk bandwidth; :meth:`Scrubber.stop` ends a pass early.
"""

import logging
import threading
import time
from collections import OrderedDict

from cluster.node.integrity import BlobCorrupt
from cluster.peers import RateLimiter

log = logging.getLogger("cluster.node.scrub")

#: distinct blobs remembered per pass to skip duplicates (bounds memory)
SEEN_MAX = 100_000


class Scrubber:
    def __init__(self, node, integrity, rate):
        self.node = node
        self.integrity = integrity
        self.limiter = RateLimiter(rate) if rate and rate > 0 else None
        self._stop = threading.Event()
        self.totals = {"passes": 0, "blobs": 0, "bytes": 0, "corrupt": 0, "missing": 0}

    def stop(self):
        self._stop.set()

    def scrub_pass(self):
        """Hash every live record's blob once; a summary dict."""
        store = self.node.store
        integrity = self.integrity
        started = time.monotonic()
        out = {"records": 0, "blobs": 0, "bytes": 0, "corrupt": 0, "missing": 0, "complete": False}
        seen = OrderedDict()
        for record in store.iter_records():
            if self._stop.is_set():
                break
            if record.deleted:
                continue
            out["records"] += 1
            if record.sha256 in seen:
                continue
            seen[record.sha256] = True
            if len(seen) > SEEN_MAX:
                seen.popitem(last=False)
            try:
                f = store.open_blob(record.sha256)
            except FileNotFoundError:
                if store.get_record(record.name) == record:   # not just replaced meanwhile
                    out["missing"] += 1
                    integrity.schedule_repair(record.sha256, record.name)
                continue
            with f:
                try:
                    if integrity.check(record.sha256, f, force=True, limiter=self.limiter,
                                       stop=self._stop, name=record.name):
                        out["blobs"] += 1
                        out["bytes"] += record.size
                except BlobCorrupt:
                    out["corrupt"] += 1
        else:
            out["complete"] = True
        for k in ("blobs", "bytes", "corrupt", "missing"):
            self.totals[k] += out[k]
        self.totals["passes"] += out["complete"]
        out["seconds"] = round(time.monotonic() - started, 3)
        if out["corrupt"] or out["missing"]:
            log.warning("scrub: %d corrupt and %d missing blobs found (%d blobs hashed); repairs queued",
                        out["corrupt"], out["missing"], out["blobs"])
        return out
