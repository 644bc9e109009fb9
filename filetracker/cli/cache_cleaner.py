"""``filetracker-cache-cleaner``: keep client caches under a size limit.

Command line as in 2.x (COMPAT.md), plus ``--once``::

    filetracker-cache-cleaner -c GLOB... -s 1G512M [-i 1h30m] [-p 50] [-d|-q] [--once]

Every scan interval it sums the sizes of the cached files in every folder
that the globs match; when the sum reaches the limit, it deletes files,
least recently used first, until less than ``percent`` of the limit remains
(the same boundaries as the 2.x tool, so the same files go).  "Recently
used" is the newer of a file's access time and its change time: the change
time is when the file came into the cache, and reads move the access time
(under the usual ``relatime`` mount option, at the first read after that and
then at most once a day; on a ``noatime`` mount the order is by arrival).
The 2.x tool ordered by version instead.  A file whose lock someone holds (a
reader or a writer) is skipped: the cleaner only takes locks without
waiting.  A file is deleted only in the version scanned: one a client
replaced by a newer version in the meantime stays.

It logs the same lines as the 2.x tool (standard error, same format, same
logger name), so log watchers keep working.
"""

import argparse
import datetime
import glob
import logging
import os
import sys
import time

from filetracker.client.client import Client
from filetracker.client.local_data_store import LocalDataStore
from filetracker.client.lock_manager import FcntlLockManager
from filetracker.names import versioned_name

#: the 2.x tool's logger name: it appears in every log line
logger = logging.getLogger("filetracker.scripts.cachecleaner")

SIZE_UNITS = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_units(text, units):
    """Parse a chained amount such as ``1G512M`` or ``1h30m`` into an int of base units.

    Every number needs a unit; raises ValueError otherwise.
    """
    text = str(text).strip()
    if not text:
        raise ValueError("empty value")
    total, digits = 0, ""
    for ch in text:
        if ch.isascii() and ch.isdigit():
            digits += ch
        elif ch in units:
            if not digits:
                raise ValueError("unit %r without a number in %r" % (ch, text))
            total += int(digits) * units[ch]
            digits = ""
        else:
            raise ValueError("unknown unit %r in %r (use %s)" % (ch, text, ", ".join(units)))
    if digits:
        raise ValueError("number without a unit in %r (use %s)" % (text, ", ".join(units)))
    return total


def parse_size(text):
    """Bytes of a size like ``1G512M`` (units B, K, M, G, T; K = 2**10)."""
    return parse_units(text, SIZE_UNITS)


def parse_interval(text):
    """Seconds of an interval like ``1h30m`` (units s, m, h, d)."""
    return parse_units(text, TIME_UNITS)


def format_size(n):
    """``1.500G``, ``12.000K``, ``7.000B``: three decimals and the largest unit that fits."""
    for unit in ("T", "G", "M", "K"):
        if n >= SIZE_UNITS[unit]:
            return "%.3f%s" % (n / SIZE_UNITS[unit], unit)
    return "%.3fB" % n


class CacheEntry:
    __slots__ = ("store", "locks", "name", "path", "size", "used", "version")

    def __init__(self, store, locks, name, path, size, used, version=0):
        self.store, self.locks, self.name, self.path, self.size, self.used = store, locks, name, path, size, used
        self.version = version


def scan(cache_dirs):
    """Every cached file of every cache folder, as :class:`CacheEntry` objects."""
    entries = []
    for cache_dir in cache_dirs:
        if not os.path.isdir(os.path.join(cache_dir, "files")):
            logger.debug("skipping %s: not a filetracker cache", cache_dir)
            continue
        store = LocalDataStore(cache_dir)
        locks = FcntlLockManager(os.path.join(cache_dir, "locks"))
        store.clean_temporary()
        for root, _dirs, files in os.walk(store.dir):
            for base in files:
                path = os.path.join(root, base)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                name = "/" + os.path.relpath(path, store.dir).replace(os.sep, "/")
                entries.append(CacheEntry(store, locks, name, path, st.st_size, max(st.st_atime, st.st_ctime),
                                          int(st.st_mtime)))
    return entries


def lru_order(entries):
    """Least recently used first; on equal recency the bigger file first, and on a full tie
    the one scanned later first (as the 2.x tool, which keeps the first scanned)."""
    ranked = sorted(enumerate(entries), key=lambda t: (t[1].used, -t[1].size, -t[0]))
    return [e for _, e in ranked]


def choose_victims(entries, limit, keep_percent):
    """Entries to delete (LRU first) if none were locked, or [] when the total is below ``limit``.

    Deleting them leaves less than ``limit * keep_percent / 100`` bytes (the
    most recently used files whose sum stays below that level).
    """
    total = sum(e.size for e in entries)
    if total < limit:
        return []
    target = limit * keep_percent / 100.0
    victims = []
    for e in lru_order(entries):
        if total < target:
            break
        victims.append(e)
        total -= e.size
    return victims


def delete_unlocked(entry):
    """Delete one cached file unless its lock is held; True when deleted."""
    lock = entry.locks.lock_for(entry.name)
    held = False
    try:
        held = lock.try_lock_exclusive()
        if held:
            # the version scanned: a newer one cached since then is not this entry
            entry.store.delete_file(versioned_name(entry.name, entry.version))
        return held
    finally:
        lock.close(delete=held)  # only a holder may remove the lock file


def clean_once(cache_globs, limit, keep_percent):
    """One scan and, if needed, one cleaning; returns (files deleted, bytes deleted, skipped)."""
    logger.info("Scanning disk...")
    # in the order given (as 2.x), each folder once
    dirs = list(dict.fromkeys(d for g in cache_globs for d in glob.glob(os.path.expanduser(g))))
    logger.debug("Glob expressions have expanded to %s", dirs)
    entries = scan(dirs)
    logger.info("Analyzing cache...")
    total = sum(e.size for e in entries)
    logger.info("Analysis done. Cache size: %s.", format_size(total))
    deleted = deleted_bytes = skipped = 0
    if total < limit:
        logger.info("Decided not to perform cache cleaning.")
        return deleted, deleted_bytes, skipped
    logger.info("Performing cache cleaning...")
    # Like choose_victims, but a file in use is skipped and the next one taken.
    target = limit * keep_percent / 100.0
    remaining = total
    for e in lru_order(entries):
        if remaining < target:
            break
        try:
            if delete_unlocked(e):
                deleted += 1
                deleted_bytes += e.size
                remaining -= e.size
                logger.debug("Deleting file: %s@%d from store located at: %s", e.name, e.version, e.store.dir)
            else:
                skipped += 1
                logger.debug("Skipping file: %s@%d from store located at: %s (in use)", e.name, e.version,
                             e.store.dir)
        except Exception as exc:
            logger.warning("During deleting file %s occurred following exception: %s", e.name, exc,
                           exc_info=True)
    logger.info("Cleaning done. Deleted %d files, total %s.", deleted, format_size(deleted_bytes))
    if skipped:
        logger.info("Kept %d files in use.", skipped)
    return deleted, deleted_bytes, skipped


def build_parser():
    p = argparse.ArgumentParser(prog="filetracker-cache-cleaner",
                                description="Keep filetracker cache folders under a size limit.")
    p.add_argument("-c", "--cache-dirs", dest="cache_dirs", nargs="+", default=[Client.DEFAULT_CACHE_DIR],
                   metavar="GLOB", help="cache folders as glob patterns (default: %(default)s)")
    p.add_argument("-s", "--cache-size-limit", dest="limit", required=True, type=_arg(parse_size),
                   help="size limit, units B K M G T, chainable (1G512M; K = 2**10)")
    p.add_argument("-i", "--scan-interval", dest="interval", default="1h", type=_arg(parse_interval),
                   help="how often to scan, units s m h d, chainable (1h30m; default %(default)s)")
    p.add_argument("-p", "--percent-cleaning-level", dest="percent", type=float, default=50.0,
                   help="share of the limit kept when cleaning, newest files first (default %(default).1f)")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-d", "--debug", action="store_true", help="log every file")
    loud.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    p.add_argument("--once", action="store_true", help="scan (and clean) once, then exit")
    return p


def _arg(parse):
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
    convert.__name__ = parse.__name__
    return convert


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 <= args.percent <= 100:
        build_parser().error("-p must be between 0 and 100")
    # -q leaves warnings and errors (as the 2.x tool did): a cron job still hears of failures
    level = logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(format="%(asctime)-23s %(name)s %(levelname)s: %(message)s", level=level)
    if not args.once:
        logger.info("Starting daemon.")
    while True:
        try:
            clean_once(args.cache_dirs, args.limit, args.percent)
        except Exception:
            logger.exception("Following exception occurred:")
            if args.once:
                return 1
        if args.once:
            return 0
        logger.info("Sleeping until %s.", datetime.datetime.now() + datetime.timedelta(seconds=args.interval))
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
