"""Run one computation per key at a time; concurrent callers share its result.

This is how concurrent readers of one file share one download: the first
caller for a key runs ``fn``; callers arriving while it runs wait for it and
get the same result (or the same exception).  Once it finishes the key is
free again, so a later call computes afresh.
"""

import threading


class _Call:
    __slots__ = ("done", "result", "error")

    def __init__(self):
        self.done = threading.Event()
        self.result = None
        self.error = None


class SingleFlight:
    def __init__(self):
        self._lock = threading.Lock()
        self._calls = {}

    def do(self, key, fn):
        """``fn()`` for the first caller of ``key``; its outcome for the others."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result
        try:
            call.result = fn()
            return call.result
        except BaseException as e:
            call.error = e
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
