"""Who closes a file, and was it killed by a signal?  (Linux ``/proc``.)

When a process dies, the kernel closes its files, and FUSE sees an ordinary
``flush``.  Uploading then would publish whatever part of the file the
process had written before it was killed.  A dying task has ``PF_EXITING``
in its flags and, when a signal killed it, the signal number in the low
bits of its ``exit_code`` (``/proc/<pid>/stat`` fields 9 and 52), both set
before its files are closed.  A normal ``exit()`` has a zero signal part.

FUSE gives the caller as a thread id; :func:`thread_group` turns it into
the process id, so that "the process that opened this handle" can be
compared with "the process that closes it".
"""

PF_EXITING = 0x00000004


def parse_stat(text):
    """``(flags, exit_code)`` from the text of ``/proc/<pid>/stat``, or None."""
    try:
        rest = text[text.rindex(")") + 2:].split()
        # rest[0] is field 3 (state): field N is rest[N - 3].
        flags = int(rest[9 - 3])
        exit_code = int(rest[52 - 3]) if len(rest) > 52 - 3 else 0
        return flags, exit_code
    except (ValueError, IndexError):
        return None


def killed_by_signal(pid):
    """True when ``pid`` is exiting because a signal killed it (best effort)."""
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            parsed = parse_stat(f.read())
    except OSError:
        return False
    if parsed is None:
        return False
    flags, exit_code = parsed
    return bool(flags & PF_EXITING) and (exit_code & 0x7F) != 0


def thread_group(pid):
    """The process (thread group) id of the task ``pid``; ``pid`` itself when unknown.

    FUSE names the calling *thread*: a file opened by one thread of a
    program and closed by another must still count as the same process.
    0 (no caller known) stays 0.
    """
    if not pid:
        return 0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return pid
