"""Stop signals reach every forked worker (filetracker/server/forking.py), whatever the order
in which the signal's handler and the new worker's registration run."""

import os
import signal
import subprocess
import time

import pytest

from filetracker.server.forking import Workers


def _default_stop_signals():
    # A test run started in the background of a shell without job control inherits SIGINT
    # ignored, and so would every ``sleep`` it starts: a SIGINT passed on would change nothing.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def sleeper():
    """A ``sleep 60`` (not Python: SIGINT ends it as SIGTERM does), whatever the run inherited."""
    return subprocess.Popen(["sleep", "60"], preexec_fn=_default_stop_signals)


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


def test_no_fork_after_a_stop():
    """The race CI hit: the stop's handler ran between the loop's check and the next fork (at the
    latest inside the call that blocks the signals), so the child forked next was never told."""
    workers = Workers()
    workers.stop(signal.SIGTERM)
    assert workers.fork(lambda: time.sleep(60)) is None
    assert len(workers) == 0


def test_start_forks_until_a_stop():
    workers = Workers()
    started = []

    def bodies():
        for k in range(5):
            if k == 2:
                workers.stop(signal.SIGTERM)   # as if the signal came while forking the third
            started.append(k)
            yield lambda: time.sleep(60)

    workers.start(bodies())
    try:
        assert started == [0, 1, 2] and len(workers) == 2
        for pid in workers:
            assert wait_for_exit(pid) == -signal.SIGTERM
    finally:
        kill_all(workers)


def test_a_failed_fork_stops_and_reaps_the_workers_forked_so_far(monkeypatch):
    workers = Workers()
    real_fork = os.fork
    forked = []

    def fork_twice():
        if len(forked) == 2:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork_twice)
    try:
        with pytest.raises(BlockingIOError):
            workers.start(lambda: time.sleep(60) for _ in range(4))
        monkeypatch.undo()
        assert len(forked) == 2 and len(workers) == 0
        for pid in forked:   # reaped already: no such child any more
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    finally:
        kill_all(forked)


def wait_for_exit(pid, timeout=10):
    """The child's exit code (-N: killed by signal N); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        assert time.monotonic() < deadline, "the worker was never told to stop"
        time.sleep(0.01)


def kill_all(pids):
    for pid in list(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def spawn_with_pid(pid):
    """A ``sleep 60`` given the number ``pid`` (the kernel hands out ns_last_pid + 1 next, so this
    needs root); None when another process took the number first."""
    with open(NS_LAST_PID, "w") as f:
        f.write(str(pid - 1))
    child = sleeper()
    if child.pid == pid:
        return child
    child.kill()
    child.wait()
    return None


@pytest.mark.skipif(not os.access(NS_LAST_PID, os.W_OK), reason="setting the next pid needs root")
def test_a_stop_after_the_wait_does_not_signal_the_reaped_workers_reused_pid():
    """Between ``os.wait()`` reaping a worker and ``discard`` forgetting it, the pid is free: a stop
    in that window signalled whatever process the kernel had given the number to since."""
    for _attempt in range(20):   # another process on the machine may take the number first
        workers = Workers()
        worker = sleeper()
        workers.add(worker.pid)
        worker.kill()
        worker.wait()   # reaped, not discarded yet
        stranger = spawn_with_pid(worker.pid)
        if stranger is not None:
            break
    else:
        pytest.fail("could not get a pid reused in 20 attempts")
    try:
        workers.stop(signal.SIGTERM)
        stranger.kill()   # a SIGTERM delivered first would have decided its end already
        assert stranger.wait(timeout=10) == -signal.SIGKILL
    finally:
        stranger.kill()
        stranger.wait()
        workers.discard(worker.pid)


def test_restart_delays_grow_after_quick_exits_and_reset_after_a_long_life():
    from filetracker.server.forking import describe_exit, restart_delay
    assert [restart_delay(n) for n in range(9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert restart_delay(10 ** 6) == 30.0
    assert describe_exit(1 << 8) == "exit code 1" and describe_exit(9) == "signal 9"
