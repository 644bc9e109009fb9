"""Polling helper shared by the test suites."""

import time


def wait_until(predicate, timeout=15.0, interval=0.1):
    """Poll ``predicate`` until truthy or ``timeout`` seconds passed; return its last value.

    It returns as soon as ``predicate`` holds: the deadline only has to be far beyond what a
    busy CI machine (twice as slow as usual, or worse) takes, not close to the usual time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
