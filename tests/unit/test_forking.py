"""Stop signals reach every forked worker (filetracker/server/forking.py), whatever the order
in which the signal's handler and the new worker's registration run."""

import os
import signal
import subprocess
import time

from filetracker.server.forking import Workers, fork_worker


def sleeper():
    return subprocess.Popen(["sleep", "60"])  # not Python: SIGINT ends it as SIGTERM does


def test_a_worker_added_after_the_stop_gets_the_stop_signal_at_once():
    workers = Workers()
    workers.stop(signal.SIGTERM)
    child = sleeper()
    try:
        workers.add(child.pid)
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()


def test_stop_passes_the_signal_it_got_to_every_worker_known():
    workers = Workers()
    children = [sleeper(), sleeper()]
    try:
        for c in children:
            workers.add(c.pid)
        assert not workers.stopping and len(workers) == 2
        workers.stop(signal.SIGINT)
        assert workers.stopping and workers.stop_signal == signal.SIGINT
        assert [c.wait(timeout=10) for c in children] == [-signal.SIGINT] * 2
        workers.stop(signal.SIGTERM)  # the workers have exited: nothing to signal, no error
        for c in children:
            workers.discard(c.pid)
        assert list(workers) == [] and len(workers) == 0
    finally:
        for c in children:
            c.kill()
            c.wait()


def test_fork_worker_when_the_stop_handler_runs_between_the_fork_and_the_registration():
    """The race CI hit: the SIGTERM arrived just before fork_worker blocked it, so Python ran
    its handler after os.fork() returned in the parent and before the pid was recorded."""
    workers = Workers()

    def register_after_the_handler(pid):
        workers.stop(signal.SIGTERM)   # the pending handler: it does not know the pid yet
        workers.add(pid)

    pid = fork_worker(lambda: time.sleep(60), register_after_the_handler)
    try:
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "the worker was never told to stop"
            time.sleep(0.01)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
