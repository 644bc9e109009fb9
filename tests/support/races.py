"""A writer racing readers: no read may be older than a write acknowledged before it began."""

import threading
import time


def race_writes_and_reads(write, readers, first, count, seconds=120):
    """Call ``write(v)`` for v = first+1 .. first+count in order (each acknowledged when it
    returns) while every ``readers[i]()`` runs in a loop in its own thread and returns
    ``(version, body)`` (``body`` None when the read path has none).  A file at version v
    must hold ``b"%d" % v``.  Returns ``(errors, last acknowledged version)``."""
    acked, errors = [first], []
    stop = threading.Event()

    def writer():
        try:
            for v in range(first + 1, first + count + 1):
                write(v)
                acked.append(v)
        except Exception as e:  # reported to the caller
            errors.append(e)
        finally:
            stop.set()

    def reader(read):
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            floor = acked[-1]
            try:
                seen, body = read()
            except Exception as e:  # reported to the caller
                errors.append(e)
                return
            if seen < floor or (body is not None and body != b"%d" % seen):
                errors.append(AssertionError("read version %d (%r) after %d was acknowledged"
                                             % (seen, body, floor)))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return errors, acked[-1]
