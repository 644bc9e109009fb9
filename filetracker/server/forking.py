"""Forking worker processes so that a stop signal is never lost between forks.

A parent that forks N workers and forwards SIGTERM/SIGINT to them must know
every child's pid when a stop signal arrives: a signal handled after
``os.fork()`` returned but before the pid was recorded would miss that child,
which then serves on, orphaned, after the parent is gone.  :func:`fork_worker`
holds the stop signals back from just before the fork until the caller has
recorded the pid; a signal that came meanwhile is handled right after, with
the new child known.  The child starts with the default handlers (a stop
signal sent to it before it installs its own ends it).
"""

import os
import signal

#: the signals a supervisor (systemd, a shell, a test) stops a service with
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
#: the most worker processes a command line may ask for: more only thrashes, and a typo
#: (an extra zero or three) would otherwise fork until the machine runs out of processes
MAX_WORKERS = 256


def fork_worker(body, register):
    """Fork a child that runs ``body()`` and exits with its return value (0 for None,
    1 if it raised); in the parent, call ``register(pid)`` with stop signals held, then return the pid."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for signum in STOP_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
                code = body() or 0
            finally:
                os._exit(code)  # a child never returns into the parent's code
        register(pid)
        return pid
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a stop signal that came meanwhile: handled now
