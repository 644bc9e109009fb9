"""Per-process facts from /proc: the processes of a process group and their peak RSS.

A server we start runs in its own session, so its process group holds it and
every child it forks (gunicorn masters and workers, forked Tornado processes).
VmHWM ("high water mark") is the peak resident set of one process over its
life; it must be read while the process is alive, so read it before stopping.
"""

import os


def group_pids(pgid):
    """Pids of live processes in process group ``pgid`` (zombies excluded)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = stat[stat.rfind(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            pids.append(int(entry))
    return sorted(pids)


def peak_rss_kib(pid):
    """VmHWM of ``pid`` in KiB, or None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def command_line(pid, limit=100):
    """A short command line for reports (program basename and arguments)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    # Show the script, not the interpreter running it.
    if len(argv) > 1 and os.path.basename(argv[0]).startswith("python"):
        argv = argv[1:]
    if argv:
        argv[0] = os.path.basename(argv[0])
    text = " ".join(argv)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def group_peak_rss(pgid):
    """[{pid, cmd, peak_rss_mib}] for every live process of the group."""
    rows = []
    for pid in group_pids(pgid):
        kib = peak_rss_kib(pid)
        if kib is not None:
            rows.append({"pid": pid, "cmd": command_line(pid), "peak_rss_mib": round(kib / 1024.0, 1)})
    return rows
