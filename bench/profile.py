"""Optional sampling profiles (py-spy) of our server processes while a load cell runs.

``start`` launches one ``py-spy record --format raw`` per pid (own session,
bounded by ``-d``); ``finish`` waits for them and summarises each raw file as
the functions with the largest share of samples, by self time (the frame on
top of the stack) and inclusive time (anywhere on the stack).  Sampling costs
CPU on the same cores, so figures of a profiled run are a little lower.
"""

import collections
import os
import re
import shutil
import signal
import subprocess

_FRAME_LINE = re.compile(r":\d+\)$")


def available():
    return shutil.which("py-spy") is not None or os.path.exists(_beside_python())


def _beside_python():
    import sys

    return os.path.join(os.path.dirname(sys.executable), "py-spy")


def start(pids, seconds, out_prefix, rate=97):
    """{pid: (Popen, raw_path)}; ``seconds`` bounds each recorder."""
    exe = _beside_python() if os.path.exists(_beside_python()) else "py-spy"
    running = {}
    for pid in pids:
        path = "%s-%d.txt" % (out_prefix, pid)
        proc = subprocess.Popen([exe, "record", "--nonblocking", "-r", str(rate), "-d", str(seconds),
                                 "-f", "raw", "-o", path, "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        running[pid] = (proc, path)
    return running


def finish(running, timeout):
    """Wait for the recorders; {pid: summary or {"error": ...}}."""
    out = {}
    for pid, (proc, path) in running.items():
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out[pid] = summarise(path) if os.path.exists(path) else {"error": "py-spy wrote nothing (exit %s)"
                                                                 % proc.returncode}
    return out


def _frame(f):
    # "handler (cluster/gateway/reads.py:120)" -> "handler (cluster/gateway/reads.py)"
    return _FRAME_LINE.sub(")", f.strip())


def summarise(path, top=12):
    """{"samples", "self": [[frame, pct]], "inclusive": [[frame, pct]]} from a py-spy raw file."""
    self_ = collections.Counter()
    incl = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_frame(x) for x in stack.split(";") if x]
            if not frames:
                continue
            total += n
            self_[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    pct = lambda c: [[fr, round(100.0 * n / total, 1)] for fr, n in c.most_common(top)]  # noqa: E731
    return {"samples": total, "self": pct(self_) if total else [], "inclusive": pct(incl) if total else []}
