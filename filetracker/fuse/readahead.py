"""Raising the kernel's read-ahead window of the mount (best effort)."""

import logging
import os
import time

logger = logging.getLogger("filetracker.fuse")

#: Kernel read-ahead for the mount, KiB.  The kernel caps a FUSE mount's
#: read-ahead at 128 KiB, so every read request would carry 128 KiB; a larger
#: window makes requests of :data:`.fs.MAX_READ` and keeps a few of them in flight.
READ_AHEAD_KIB = 2048


def tune_readahead(mountpoint, timeout=10.0):
    """Raise the mount's read-ahead (``/sys/class/bdi/<dev>/read_ahead_kb``); best effort.

    Runs in a thread after ``init``: stat of the mountpoint waits until the
    kernel has finished setting up the mount, so it must not run in ``init``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            dev = os.stat(mountpoint).st_dev
            parent = os.stat(os.path.dirname(mountpoint.rstrip("/")) or "/").st_dev
        except OSError:
            return
        if dev != parent:
            break
        time.sleep(0.05)
    else:
        return
    path = "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(dev), os.minor(dev))
    try:
        with open(path, "w") as f:
            f.write(str(READ_AHEAD_KIB))
    except OSError as e:
        logger.debug("cannot set %s: %s", path, e)

