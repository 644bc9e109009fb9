"""Start real services as subprocesses for tests, and stop exactly those.

Every service runs in its own session (``start_new_session=True``), so that
stopping it signals its whole process group and no child outlives a test.
Only processes started here are ever signalled, always by pid/pgid.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


#: Under pytest-xdist each worker takes its ports from its own block below the kernel's
#: ephemeral range (32768-60999 by default): two workers never pick the same port in the moment
#: between the check and the service's own bind, and no outgoing connection's local port takes
#: it meanwhile either (a service polled for readiness must be ours, not a neighbour's).
PORT_BLOCK_START = 10000
PORT_BLOCK_SIZE = 2500
PORT_BLOCKS = 8
_next_port = {}


def _ephemeral_start():
    """First port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_block():
    """``(first, last)`` ports of this xdist worker's block, or None outside xdist, beyond
    :data:`PORT_BLOCKS` workers, or when the block would reach into the ephemeral range (those
    take the kernel's free ports, as a single run does)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not (worker.startswith("gw") and worker[2:].isdigit()) or int(worker[2:]) >= PORT_BLOCKS:
        return None
    first = PORT_BLOCK_START + int(worker[2:]) * PORT_BLOCK_SIZE
    last = first + PORT_BLOCK_SIZE - 1
    return (first, last) if last < _ephemeral_start() else None


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(count=1):
    """A base port such that base .. base+count-1 are free on 127.0.0.1 right now (from this
    worker's block under xdist, handed out in turn so a port is not reused soon)."""
    block = _worker_block()
    for _ in range(500):
        if block is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                base = s.getsockname()[1]
            if base + count > 65535:
                continue
        else:
            first, last = block
            base = _next_port.get(block, first + os.getpid() % PORT_BLOCK_SIZE)
            if base + count - 1 > last:
                base = first
            _next_port[block] = base + count
        if all(_bindable(p) for p in range(base, base + count)):
            return base
    raise RuntimeError("no free port range of %d" % count)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_port_range(1)


def _process_stats():
    """``(pid, fields)`` of every process in /proc; ``fields`` follow the command in
    ``/proc/PID/stat``: state, parent pid, process group, ..."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()   # after the command, which may hold spaces
            except OSError:
                continue
            yield int(entry), fields


def child_pids(pid):
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    return [child for child, fields in _process_stats() if int(fields[1]) == pid]


def wait_for_children(pid, count, timeout=20.0):
    """Pids of ``pid``'s live children once there are at least ``count`` of them: a server with
    workers answers as soon as its first one serves, and on a loaded machine the parent may fork
    the next one a moment later.  Fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        children = child_pids(pid)
        if len(children) >= count:
            return children
        assert time.monotonic() < deadline, "%d of %d children of %d after %.0f s" % (
            len(children), count, pid, timeout)
        time.sleep(0.05)


def group_pids(pgid):
    """Pids of the processes in process group ``pgid`` that are not zombies (from /proc)."""
    return [member for member, fields in _process_stats() if int(fields[2]) == pgid and fields[0] != "Z"]


def script(name):
    """Path of a console script installed beside the running interpreter."""
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else name


class Service:
    """A subprocess we own: started in its own session, stopped by process group.

    ``ready_url`` is polled until it answers (any HTTP status) or ``timeout``
    passes.  Output goes to ``log_path`` so a failing test can show it.
    """

    def __init__(self, argv, log_path, env=None, ready_url=None, timeout=20.0):
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.ready_url = ready_url
        self.timeout = timeout
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, start_new_session=True, cwd=ROOT,
        )
        log.close()
        if self.ready_url:
            self.wait_ready()
        return self

    def wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (self.argv[0], self.proc.returncode, self.log_tail()))
            try:
                requests.get(self.ready_url, timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("%s did not answer at %s within %ss:\n%s"
                           % (self.argv[0], self.ready_url, self.timeout, self.log_tail()))

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self):
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def pause(self):
        self.signal(signal.SIGSTOP)

    def resume(self):
        self.signal(signal.SIGCONT)

    def stop(self, timeout=10.0):
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.proc is None:
            return
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Children of the group (if any) must not outlive the test either.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def peak_rss_kib(self):
        """VmHWM of the main process in KiB (peak resident set), or None."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None
