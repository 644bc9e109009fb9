"""Open-file limit of the servers: the soft limit raised to the hard one at start.

A server holds a descriptor per client connection, per pooled connection to
its peers, per upload in progress (a node: up to 16 temporary files per disk
thread while it stores a batch) and per file it is sending.  A shell's soft
limit is often 1024 while the hard limit is far higher; running out makes
``accept()`` and every open fail at once, for every request.  The hard limit is
what the administrator allows (systemd units set ``LimitNOFILE``), so the
servers take it, as Go programs and many servers do.
"""

import resource

#: used when the hard limit is unlimited
UNLIMITED_CAP = 1 << 20


def raise_fd_limit():
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return the soft limit
    in force afterwards.  Never lowers it; a refusal leaves it as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            return soft
        return want
    return soft
