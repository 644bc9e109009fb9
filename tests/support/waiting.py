"""Polling helper shared by the test suites."""

import time


def wait_until(predicate, timeout=5.0, interval=0.1):
    """Poll ``predicate`` until truthy or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
