"""Forking worker processes so that a stop signal is never lost between forks.

A parent that forks N workers and forwards SIGTERM/SIGINT to them must know
every child's pid when a stop signal arrives: a signal handled after
``os.fork()`` returned but before the pid was recorded would miss that child,
which then serves on, orphaned, after the parent is gone.  :func:`fork_worker`
holds the stop signals back from just before the fork until the caller has
recorded the pid; a signal that came meanwhile is handled right after, with
the new child known.  The child starts with the default handlers (a stop
signal sent to it before it installs its own ends it).

Blocking is not quite enough: Python runs a signal's handler some bytecodes
after the signal arrived, so a SIGTERM that came just *before* the block may
have its handler run after ``os.fork()`` returned and before the pid was
recorded.  :class:`Workers` closes that gap: a worker recorded after a stop
gets the stop signal at once.  (Seen in CI: a server with ``--workers 64``
stopped while forking, and one child never told, so the parent waited on it
for good.)
"""

import os
import signal

#: the signals a supervisor (systemd, a shell, a test) stops a service with
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
#: the most worker processes a command line may ask for: more only thrashes, and a typo
#: (an extra zero or three) would otherwise fork until the machine runs out of processes
MAX_WORKERS = 256


class Workers:
    """The pids of the workers forked so far, and the stop signal they are to get.

    Install :meth:`stop` as the stop signals' handler and pass :meth:`add` to
    :func:`fork_worker`: :meth:`stop` sends the signal to every worker known,
    and a worker added after it gets it at once, whatever the order in which
    the handler and the registration ran.
    """

    def __init__(self):
        self._pids = {}   # pid -> None: an ordered set
        self.stop_signal = None

    @property
    def stopping(self):
        """True once a stop signal was received."""
        return self.stop_signal is not None

    def add(self, pid):
        self._pids[pid] = None
        if self.stop_signal is not None:
            _send(pid, self.stop_signal)

    def discard(self, pid):
        self._pids.pop(pid, None)

    def stop(self, signum, _frame=None):
        """A signal handler: pass ``signum`` on to every worker, now and later."""
        self.stop_signal = signum
        for pid in list(self._pids):
            _send(pid, signum)

    def __iter__(self):
        return iter(list(self._pids))

    def __len__(self):
        return len(self._pids)


def _send(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it has exited already; its status is collected by the wait


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
