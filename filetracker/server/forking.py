"""Forking worker processes so that a stop signal is never lost between forks.

A parent that forks N workers and forwards SIGTERM/SIGINT to them must know
every child's pid when a stop signal arrives: a child forked after the
handler ran, or before its pid was recorded, would never be told, would serve
on after the parent is gone, and the parent would wait for it for good.

:class:`Workers` keeps the pids and the stop; :meth:`Workers.fork` blocks the
stop signals, checks for a stop *with them blocked*, forks and records the
pid, then unblocks them: a stop signal handled before the block (Python runs
a pending handler at the latest inside the blocking call) means no fork, one
that comes later is handled after the pid is recorded.  (Seen in CI, before:
a server with ``--workers 64`` stopped while forking; the handler ran between
the loop's "stopping?" check and the next fork, which then forked a child
nobody would ever signal.)  The child starts with the default handlers (a
stop signal sent to it before it installs its own ends it).

Each worker is signalled through a pidfd (Linux >= 5.3) opened when it is
recorded: a pid number is free for reuse as soon as the parent's wait reaps
the child, and a stop arriving between that wait and :meth:`Workers.discard`
would otherwise signal whatever process had been given the number since; a
pidfd keeps naming the reaped child, and signalling it is a no-op.  Without
pidfds, plain pids are signalled (the window is a few bytecodes).
"""

import os
import signal

#: the signals a supervisor (systemd, a shell, a test) stops a service with
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
#: the most worker processes a command line may ask for: more only thrashes, and a typo
#: (an extra zero or three) would otherwise fork until the machine runs out of processes
MAX_WORKERS = 256


#: a worker that exits within this many seconds of its start failed to start (a quick exit)
QUICK_EXIT_SECONDS = 10.0
#: the longest wait before restarting a worker that keeps exiting at once
MAX_RESTART_DELAY = 30.0


def restart_delay(quick_exits):
    """Seconds to wait before restarting a worker after ``quick_exits`` quick exits in a row:
    0 after a worker that ran a while, then 0.5, 1, 2, ... up to :data:`MAX_RESTART_DELAY`
    (a worker that cannot start, e.g. its auth file broken since, is not forked in a loop)."""
    if quick_exits <= 0:
        return 0.0
    return min(MAX_RESTART_DELAY, 0.5 * 2 ** min(quick_exits - 1, 16))


def describe_exit(status):
    """A wait status in words: ``exit code 1``, ``signal 9``."""
    code = os.waitstatus_to_exitcode(status)
    return "signal %d" % -code if code < 0 else "exit code %d" % code


class Workers:
    """The pids of the workers forked and not yet reaped, and the stop signal.

    :meth:`install` makes :meth:`stop` the stop signals' handler; :meth:`start`
    and :meth:`fork` fork workers, none after a stop.
    """

    def __init__(self, on_stop=None):
        self._pids = {}   # pid -> its pidfd, or None where pidfds are missing
        self.stop_signal = None  # the signal that asked for the stop, passed on to the workers
        self._on_stop = on_stop  # called once, in the handler of the first stop signal

    @property
    def stopping(self):
        """True once a stop signal was received."""
        return self.stop_signal is not None

    def install(self):
        """Handle the stop signals with :meth:`stop` from now on."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.stop)

    def stop(self, signum, _frame=None):
        """A signal handler: pass ``signum`` on to every worker, now and later; the first time,
        call ``on_stop`` too."""
        first = self.stop_signal is None
        self.stop_signal = signum   # first the stop, then the pids; add() does the reverse
        for pid, pidfd in list(self._pids.items()):
            _send(pid, pidfd, signum)
        if first and self._on_stop is not None:
            self._on_stop()

    def start(self, bodies):
        """Fork a worker for each callable of ``bodies`` (:meth:`fork`), fewer after a stop.

        If a fork fails, the workers forked so far are stopped and reaped before the
        error is raised: none is left serving without a parent."""
        try:
            for body in bodies:
                if self.fork(body) is None:
                    break
        except OSError:
            self.stop(signal.SIGTERM)
            for pid in self:
                _reap(pid)
                self.discard(pid)
            raise

    def fork(self, body):
        """Fork a worker that runs ``body()`` and exits with its return value (0 for None,
        1 if it raised); its pid, or None when a stop came first (nothing forked)."""
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            if self.stopping:   # a handler pending before the block has run by now
                return None
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for signum in STOP_SIGNALS:
                        signal.signal(signum, signal.SIG_DFL)
                    self._close_pidfds()   # the siblings' are the parent's business
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
                    code = body() or 0
                finally:
                    os._exit(code)  # a child never returns into the parent's code
            self.add(pid)
            return pid
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a stop signal that came meanwhile: handled now

    def add(self, pid):
        """Record a worker (a child not yet reaped); one recorded after a stop gets the stop
        signal at once."""
        pidfd = _pidfd(pid)
        self._pids[pid] = pidfd   # first the pid, then the stop: stop() may interrupt either way
        if self.stop_signal is not None:
            _send(pid, pidfd, self.stop_signal)

    def discard(self, pid):
        """Forget a worker that has been reaped (its pid may be reused by another process)."""
        pidfd = self._pids.pop(pid, None)
        if pidfd is not None:
            os.close(pidfd)

    def _close_pidfds(self):
        for pidfd in self._pids.values():
            if pidfd is not None:
                os.close(pidfd)

    def __iter__(self):
        return iter(list(self._pids))

    def __len__(self):
        return len(self._pids)


def _pidfd(pid):
    """A pidfd of the child ``pid`` (not reaped yet, so the number is still its own), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):   # no pidfds (old kernel or libc, seccomp): plain pids
        return None


def _send(pid, pidfd, signum):
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it has exited already; its status is collected by the wait


def _reap(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
