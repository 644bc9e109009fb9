"""``--processes N``: several gateway processes behind one listening socket.

One gateway process is one Python interpreter, so it uses one CPU core.  The
gateway keeps no state that processes would have to share (each learns the
ring and the nodes' liveness by itself, each has its own keep-alive
connections), so on a host with several cores the simplest way to use them is
N identical processes accepting on the same socket: the socket is bound once,
then N children are forked; the kernel hands each new client connection to one
of them.  The parent only forwards SIGTERM/SIGINT to the children and waits.

Each child serves its own ``/metrics`` and ``/status`` (figures of that
process).  A child that dies is not restarted: the others keep serving and the
exit code tells the supervisor (systemd, the test harness) what happened.
"""

import os

from tornado.netutil import bind_sockets

from filetracker.server.forking import Workers


def run_processes(n, port, host, serve_in_child):
    """Bind ``host:port``, fork ``n`` children that each run ``serve_in_child(sockets)``,
    wait for them; returns the first non-zero exit status (0 when all ended cleanly).

    A stop signal while the children are being forked stops the forking and
    reaches every child forked so far (:class:`filetracker.server.forking.Workers`).
    """
    sockets = bind_sockets(port, address=host)
    children = Workers()
    children.install()
    try:
        children.start(lambda: serve_in_child(sockets) for _ in range(n))
    finally:
        for sock in sockets:
            sock.close()  # only the children accept
    status = 0
    for pid in children:
        _, st = os.waitpid(pid, 0)
        children.discard(pid)  # reaped: a later stop must not signal its pid (it may be reused)
        code = os.waitstatus_to_exitcode(st)
        if code and not status:
            status = code if code > 0 else 128 - code
    return status
