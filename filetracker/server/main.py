"""``filetracker-server``: the single-node server, command-line compatible with 2.x.

It always runs in the foreground (``-D/--no-daemon`` is accepted for
compatibility and changes nothing; use systemd or supervisor to detach).
``--workers N`` forks N processes sharing the listening socket; the store is
process-safe (SQLite transactions + an ``flock`` store lock).  One process
tree serves a data folder at a time: the parent takes the folder's service
lock (:func:`lock_data_folder`) before it forks, and a second server (or
node) started on the same folder exits with status 2.  SIGTERM or
SIGINT shuts down cleanly: stop accepting, let running requests end (a few
seconds at most), close the store.
"""

import argparse
import asyncio
import errno
import fcntl
import functools
import ipaddress
import logging
import os
import signal
import sqlite3
import sys
import threading
import time

import tornado.netutil

from filetracker import configfile
from filetracker.server import eventloop, fdlimit, observe
from filetracker.server.app import ServerConfig, make_app, make_server, serve_front
from filetracker.server.base import ACTIVITY_SETTING
from filetracker.server.forking import MAX_WORKERS, QUICK_EXIT_SECONDS, Workers, describe_exit, restart_delay
from filetracker.storage import ObjectStore, StorageError, clear_uploads_of
from filetracker.units import byte_count, timeout_seconds

log = logging.getLogger("filetracker.server")

#: Seconds running requests get to finish after SIGTERM.
SHUTDOWN_GRACE = 5.0


def port_number(text):
    """argparse type of a TCP port to listen on (1..65535; shared by server, node and gateway)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError("must be a port number between 1 and 65535: %r" % text)
    return port


def build_parser():
    p = argparse.ArgumentParser(
        prog="filetracker-server",
        description="Serve a filetracker store over HTTP (protocol 2). Runs in the foreground.")
    p.add_argument("-d", "--dir", default=os.environ.get("FILETRACKER_DIR"),
                   help="data folder (default: $FILETRACKER_DIR)")
    p.add_argument("-p", "--port", type=port_number, default=9999, help="TCP port (default 9999)")
    p.add_argument("-l", "--listen-on", "--host", dest="host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("-D", "--no-daemon", action="store_true",
                   help="accepted for 2.x compatibility: the server never daemonises")
    p.add_argument("-L", "--log", default=None, help="log file (default: standard output)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   type=str.upper, help="log level (default INFO)")
    observe.add_logging_options(p)  # --log-format text|json
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the socket (default 1)")
    p.add_argument("--fallback-url", default=None,
                   help="migration mode: GET/HEAD of a file this server has no record of is served "
                        "from this (old) server, streamed, and copied here in the background")
    p.add_argument("--fallback-no-copy", action="store_true",
                   help="with --fallback-url: serve from the old server but do not copy here")
    p.add_argument("--read-only", action="store_true", help="refuse PUT and DELETE (403)")
    p.add_argument("--max-body-size", type=byte_count, default=ServerConfig.max_body_size, metavar="BYTES",
                   help="largest accepted request body (bytes, or e.g. 512M, 1G; default 16G)")
    p.add_argument("--threads", type=int, default=ServerConfig.threads,
                   help="disk I/O threads per process (default %d)" % ServerConfig.threads)
    p.add_argument("--read-cache-bytes", type=byte_count, default=ServerConfig.read_cache_bytes,
                   help="memory for recently read records and small bodies answered without a disk hop "
                        "(default 16M; 0: off; always off with --workers above 1)")
    p.add_argument("--no-fast-reads", action="store_true",
                   help="answer every request through the full handler cycle (the fast path for "
                        "GET/HEAD of cached files, filetracker/server/front.py, is on by default)")
    add_guard_arguments(p)
    return p


def parse_args(argv=None, p=None):
    """The checked options (``p.error``, exit 2, for a bad one); ``p`` defaults to :func:`build_parser`."""
    p = p or build_parser()
    args = configfile.parse_args(p, argv)  # --config FILE, then the flags
    if not args.dir:
        p.error("no data folder: give --dir DIR or set FILETRACKER_DIR")
    if not 1 <= args.workers <= MAX_WORKERS:
        p.error("--workers must be from 1 to %d" % MAX_WORKERS)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.fallback_url and not args.fallback_url.startswith(("http://", "https://")):
        p.error("--fallback-url must be an http:// or https:// URL")
    check_guard_arguments(p, args)
    if args.fallback_no_copy and not args.fallback_url:
        p.error("--fallback-no-copy needs --fallback-url")
    return args


def add_guard_arguments(p, defaults=ServerConfig):
    """Access control and limit options (shared by filetracker-server, -node and -gateway)."""
    p.add_argument("--auth-file", metavar="F", default=None,
                   help="token file (see filetracker-admin token add): require a token of the right scope")
    p.add_argument("--max-header-size", type=byte_count, default=defaults.max_header_size, metavar="BYTES",
                   help="largest request header block (431 above it; bytes, or e.g. 64K; default %(default)s)")
    p.add_argument("--max-uri-size", type=byte_count, default=defaults.max_uri_bytes, metavar="BYTES",
                   help="longest request target (414 above it; bytes, or e.g. 16K; default %(default)s)")
    p.add_argument("--idle-timeout", type=timeout_seconds, default=defaults.idle_connection_timeout, metavar="S",
                   help="seconds an idle connection (or an unfinished request head) is kept (default %(default)s)")
    p.add_argument("--body-timeout", type=timeout_seconds, default=defaults.body_timeout, metavar="S",
                   help="seconds allowed to receive one whole request body (default %(default)s)")
    p.add_argument("--body-idle-timeout", type=timeout_seconds, default=defaults.body_idle_timeout, metavar="S",
                   help="seconds a request body may stall before 408 (0: never; default %(default)s)")
    p.add_argument("--send-timeout", type=timeout_seconds, default=defaults.send_timeout, metavar="S",
                   help="seconds a client may stop reading an answer before it is cut (0: never; "
                        "default %(default)s)")
    p.add_argument("--max-uploads", type=int, default=None, metavar="N",
                   help="uploads received at once (per process); 503 + Retry-After above it (default: no bound)")


def check_guard_arguments(p, args):
    """``p.error`` (exit 2) for unusable limit values or an unreadable token file."""
    from filetracker.auth import AuthFileError, TokenTable

    for flag in ("max_header_size", "max_uri_size"):
        if getattr(args, flag) < 256:
            p.error("--%s must be at least 256" % flag.replace("_", "-"))
    for flag in ("idle_timeout", "body_timeout"):
        if getattr(args, flag) <= 0:
            p.error("--%s must be positive" % flag.replace("_", "-"))
    for flag in ("body_idle_timeout", "send_timeout"):
        if getattr(args, flag) < 0:
            p.error("--%s must not be negative" % flag.replace("_", "-"))
    if args.max_uploads is not None and args.max_uploads < 1:
        p.error("--max-uploads must be at least 1")
    if args.auth_file:
        try:
            TokenTable.load(args.auth_file)
        except AuthFileError as e:
            p.error(str(e))


def open_access_warning(program, host, port, auth_file, access):
    """The warning to log when ``program`` listens beyond loopback without a token file (anyone
    who can reach the port has ``access``, e.g. "reads and writes"), or None."""
    if auth_file or loopback_only(host):
        return None
    return ("%s listens on %s:%d without --auth-file: anyone who can reach that port %s every file "
            "(--auth-file turns access control on; docs/SECURITY.md)" % (program, host or "*", port, access))


def loopback_only(host):
    """True when ``host`` (a listening address) can be reached from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # a host name (or "" / "0.0.0.0" handled above as addresses): assume reachable
        return False


def guard_config(args):
    """The ServerConfig/NodeConfig/GatewayConfig keyword arguments of the options above."""
    return dict(auth_file=os.path.abspath(args.auth_file) if args.auth_file else None,
                max_header_size=args.max_header_size, max_uri_bytes=args.max_uri_size,
                idle_connection_timeout=args.idle_timeout, body_timeout=args.body_timeout,
                body_idle_timeout=args.body_idle_timeout, send_timeout=args.send_timeout,
                max_uploads=args.max_uploads)


#: File in a data folder whose ``flock`` the process serving the folder holds for its whole life.
#: Not the store's ``store.lock``: that one is taken and released around every commit by each
#: process sharing the store (a server's workers, tools opening an ObjectStore), so it cannot be
#: held exclusively for a lifetime.
FOLDER_LOCK = "service.lock"


class FolderInUse(Exception):
    """Another process (a server or node that is still running) holds the folder's service lock."""


class ForeignFolder(Exception):
    """The folder holds a filetracker 2.x store (``links/``), which this layout does not read."""


def check_not_2x_store(path):
    """Raise :class:`ForeignFolder` when ``path`` is the data folder of a 2.x server.

    A 2.x folder keeps names as symbolic links under ``links/`` and gzip-compressed
    blobs under ``blobs/<xx>/<sha256>``, the path this store uses for plain blobs:
    serving it would show none of its files and overwrite shared blobs with plain
    bytes, breaking the 2.x store for a later import.  Ours never creates ``links/``.
    """
    if os.path.isdir(os.path.join(path, "links")):
        raise ForeignFolder(
            "%s is the data folder of a filetracker 2.x server (it has links/): this server keeps "
            "another layout and would damage it; give a new folder and copy the files in with "
            "'filetracker-admin import --from-dir %s --to URL'" % (path, path))


def lock_data_folder(path):
    """Create the data folder ``path`` if needed and take its service lock; returns the descriptor.

    The lock is an exclusive, non-blocking ``flock`` on ``path/service.lock``:
    keep the descriptor open for the life of the process.  Processes forked
    afterwards (``--workers``) inherit the descriptor and so hold the same
    lock; the kernel drops it when the last of them exits, crashed or not,
    so a stale lock never needs cleaning up.  The file holds the pid of the
    process that took it, for the message a second process prints.

    Raises :class:`FolderInUse`, :class:`ForeignFolder` (a 2.x server's folder), or OSError
    when the folder cannot be created or written (a file, a missing parent, no permission).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
    check_not_2x_store(path)
    os.makedirs(path, exist_ok=True)
    fd = os.open(os.path.join(path, FOLDER_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            pid = ""
        os.close(fd)
        raise FolderInUse("%s is in use by another process%s" % (
            path, " (pid %s)" % pid if pid.isdigit() else "")) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


def lock_data_folder_or_exit(parser, path):
    """:func:`lock_data_folder`, or exit with status 2 and one line (the folder is in use, a 2.x
    server's, or unusable: a file, a missing parent, no permission).  Keep the descriptor it returns."""
    try:
        return lock_data_folder(path)
    except (FolderInUse, ForeignFolder) as e:
        parser.exit(2, "%s: error: %s\n" % (parser.prog, e))
    except OSError as e:
        parser.error("cannot use data folder %s: %s" % (path, e.strerror or e))


def setup_logging(path, level):
    handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One access line per request is too much at INFO for a busy server.
    logging.getLogger("tornado.access").setLevel(max(logging.WARNING, root.level))


#: seconds after start-up before the one pass that removes blobs left by a crash
ORPHAN_PASS_DELAY = 1.0


async def collect_orphans(store, run, stopping, delay=ORPHAN_PASS_DELAY):
    """Once, ``delay`` seconds after start-up: unlink the blobs no record references (left by a
    crash between placing a blob and committing its record), in the executor, one at a time
    under the store lock, so serving goes on meanwhile.  ``stopping`` (a threading.Event) ends
    the pass early: a shutdown must not wait for a pass over millions of blobs."""
    await asyncio.sleep(delay)
    try:
        count, freed = await run(store.collect_garbage, stopping.is_set)
    except Exception as exc:  # noqa: BLE001 - e.g. the store closed by a shutdown meanwhile
        log.info("orphan blob pass stopped: %s", exc)
        return
    if count:
        log.warning("removed %d orphan blobs (%d bytes) left by an earlier crash", count, freed)


async def serve(sockets, config, orphan_pass=True):
    """Serve on ``sockets`` until SIGTERM/SIGINT, then shut down cleanly.

    ``orphan_pass``: run :func:`collect_orphans` (one process of a ``--workers`` group does).
    """
    app = make_app(config)
    server = make_server(serve_front(app, config), config)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("filetracker-server serving %s on http://%s:%d/", config.dir, config.host, config.port)
    stopping = threading.Event()
    orphans = asyncio.ensure_future(collect_orphans(app.ctx.store, app.ctx.run, stopping)) if orphan_pass else None
    await stop.wait()
    log.info("shutting down")
    stopping.set()
    if orphans is not None:
        orphans.cancel()
    server.stop()   # no new connections; the requests in progress may end, for SHUTDOWN_GRACE at most
    left = await server.drain(app.settings[ACTIVITY_SETTING], SHUTDOWN_GRACE)
    if left:
        log.warning("%d requests did not finish within %ss; their connections were closed", left, SHUTDOWN_GRACE)
    if app.ctx.fallback is not None:
        app.ctx.fallback.close()
    app.ctx.executor.shutdown(wait=True)
    app.ctx.store.close()


def _clear_uploads_of(data_dir, pid):
    """Remove what the exited worker ``pid`` left of unfinished uploads (logged, never raised:
    the other workers serve on)."""
    try:
        count = clear_uploads_of(data_dir, pid)
    except OSError as e:
        log.warning("cannot remove the unfinished uploads of worker %d: %s", pid, e)
        return
    if count:
        log.info("removed %d unfinished uploads of worker %d", count, pid)


def run_workers(sockets, config, workers):
    """Fork ``workers`` children serving ``sockets``; forward SIGTERM/SIGINT to them.

    A child that dies unexpectedly is restarted; the parent exits when all
    children have exited after a shutdown signal.
    """
    def close_listeners():
        # the parent holds the listening sockets only to fork replacements: once stopping, it
        # lets them go, so that new connections are refused at once (as by a single process)
        # instead of being accepted by the kernel and reset when the parent exits
        for sock in sockets:
            sock.close()

    children = Workers(on_stop=close_listeners)

    def work(orphan_pass=False):
        try:
            eventloop.run(serve(sockets, config, orphan_pass))
        except BaseException:
            log.exception("worker failed")
            return 1
        return 0

    children.install()  # a stop while forking: no more forks, every child forked gets it
    # one orphan pass per start of the server is enough
    children.start(functools.partial(work, k == 0) for k in range(workers))
    born = dict.fromkeys(children, time.monotonic())
    quick_exits = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        _clear_uploads_of(config.dir, pid)
        if children.stopping:
            continue
        lived = time.monotonic() - born.pop(pid, 0.0)
        quick_exits = quick_exits + 1 if lived < QUICK_EXIT_SECONDS else 0
        delay = restart_delay(quick_exits)
        log.warning("worker %d exited (%s) after %.1f s; restarting it%s", pid, describe_exit(status), lived,
                    " in %.1f s (%d quick exits in a row)" % (delay, quick_exits) if delay else "")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not children.stopping:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        try:
            new = children.fork(work)   # None after a stop
        except OSError as e:  # the others serve on
            log.error("cannot restart the worker: %s", e)
            continue
        if new is not None:
            born[new] = time.monotonic()
    return 0


def main(argv=None):
    parser = build_parser()
    args = parse_args(argv, parser)
    eventloop.check_or_exit("filetracker-server")
    data_dir = os.path.abspath(args.dir)
    # before anything touches the folder (the store clears tmp/); forked workers inherit it
    folder_lock = lock_data_folder_or_exit(parser, data_dir)  # noqa: F841 - held until the process exits
    fdlimit.raise_fd_limit()
    try:
        setup_logging(args.log, args.log_level)
    except OSError as e:
        parser.error("cannot open log file %s: %s" % (args.log, e.strerror or e))
    observe.setup_logging(args.log_format, with_pid=True)
    warning = open_access_warning("filetracker-server", args.host, args.port, args.auth_file,
                                  "reads" if args.read_only else "reads and writes")
    if warning:
        log.warning(warning)
    config = ServerConfig(dir=data_dir, host=args.host, port=args.port,
                          allow_writes=not args.read_only, fallback_url=args.fallback_url,
                          fallback_copy=not args.fallback_no_copy,
                          max_body_size=args.max_body_size, threads=args.threads,
                          # several processes share the store: one's writes would not reach another's cache
                          read_cache_bytes=args.read_cache_bytes if args.workers == 1 else 0,
                          fast_reads=not args.no_fast_reads,
                          **guard_config(args))
    try:
        # Open once here: creates the layout and clears tmp/ before any worker starts.
        ObjectStore(config.dir, clear_tmp=True).close()
        sockets = tornado.netutil.bind_sockets(config.port, config.host)
    except OSError as e:
        print("filetracker-server: %s" % e, file=sys.stderr)
        return 1
    except (sqlite3.Error, StorageError) as e:   # e.g. a records file that is no database
        print("filetracker-server: cannot open the store in %s: %s" % (config.dir, e), file=sys.stderr)
        return 1
    config.clear_tmp = False
    if args.workers > 1:
        return run_workers(sockets, config, args.workers)
    eventloop.run(serve(sockets, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
