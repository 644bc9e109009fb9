"""``filetracker-fuse MOUNTPOINT``: mount the store as a filesystem.

Checks everything it can before mounting (FUSE available, mountpoint usable,
server answering) and says what is wrong with a non-zero exit status.
Without ``--foreground`` it forks, mounts in the child and exits 0 only when
the child reports the mount ready (the kernel's first request arrived);
otherwise the child's error is printed and the status is 1.  Unmount with
``fusermount3 -u MOUNTPOINT`` (or SIGINT/SIGTERM to the process).

System packages (Debian): ``fuse3`` (``fusermount3`` and ``libfuse3-3``).
Python: ``mfusepy``.
"""

import argparse
import logging
import os
import re
import shutil
import stat
import sys
import urllib.parse

from filetracker.errors import FiletrackerError, NotFoundError, RemoteError
from filetracker.units import byte_count, timeout_seconds
from filetracker.urls import safe_url

DEFAULT_RANGE_THRESHOLD = 64 << 20
DEFAULT_TIMEOUT = 10.0
#: Seconds after a request to the server got no answer during which the mount does
#: not ask again for the same caller (EIO, or the cache's copy, at once): one
#: operation waits one --timeout.
QUIET_AFTER_FAILURE = 1.0
#: libfuse worker threads: requests served at once (network waits included).
MAX_THREADS = 16
READY = b"FILETRACKER-FUSE-READY\n"
#: Harmless notices of libfuse 3.14 not worth showing to a user.
NOISE = (b"Ignoring invalid max threads value",)

logger = logging.getLogger("filetracker.fuse")


class UsageError(Exception):
    """A problem to report to the user (message) with exit status 1."""


def build_parser():
    p = argparse.ArgumentParser(
        prog="filetracker-fuse",
        description="Mount a filetracker store as a filesystem (unmount: fusermount3 -u MOUNTPOINT).")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty folder")
    p.add_argument("--url", default=os.environ.get("FILETRACKER_URL"),
                   help="server or gateway URL (default: $FILETRACKER_URL)")
    p.add_argument("--cache-dir", default=os.environ.get("FILETRACKER_DIR"),
                   help="the Client's cache folder, shared with Python users "
                        "(default: $FILETRACKER_DIR or ~/.filetracker-store)")
    p.add_argument("--read-only", action="store_true", help="mount read-only")
    p.add_argument("--foreground", action="store_true", help="stay in the foreground (SIGINT/SIGTERM unmount)")
    p.add_argument("--attr-timeout", type=timeout_seconds, default=1.0, metavar="SECONDS",
                   help="how long attributes and listings are cached (default 1)")
    p.add_argument("--timeout", type=timeout_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="network timeout: a server that does not answer gives EIO (default 10)")
    p.add_argument("--range-threshold", type=byte_count, default=DEFAULT_RANGE_THRESHOLD, metavar="BYTES",
                   help="uncached files larger than this are read by HTTP ranges (default 64M)")
    p.add_argument("--direct-io-above", type=byte_count, default=None, metavar="BYTES",
                   help="read stored files larger than this with direct I/O, bypassing the kernel's "
                        "page cache: one copy and no second cached copy, but repeated opens are not "
                        "cached by the kernel and shared mmap of such files fails (default: never)")
    p.add_argument("--log", metavar="FILE", help="log to FILE (default: stderr in the foreground, nowhere otherwise)")
    p.add_argument("--debug", action="store_true", help="verbose logging")
    return p


def load_binding():
    """Import mfusepy, or raise UsageError saying what to install."""
    if not os.path.exists("/dev/fuse"):
        raise UsageError("FUSE is unavailable: /dev/fuse does not exist (load the 'fuse' kernel module; "
                         "in a container, pass --device /dev/fuse and CAP_SYS_ADMIN)")
    try:
        import mfusepy
    except ImportError:
        raise UsageError("the Python FUSE binding is missing: pip install mfusepy "
                         "(or pip install 'filetracker-replicated[fuse]')") from None
    except OSError as e:
        raise UsageError("libfuse is missing (%s): apt-get install fuse3" % e) from None
    if shutil.which("fusermount3") is None and os.geteuid() != 0:
        raise UsageError("fusermount3 is missing: apt-get install fuse3")
    return mfusepy


def _broken_mountpoint(path, e):
    return UsageError("mountpoint %s is busy or broken (%s); try fusermount3 -uz %s" % (path, e.strerror, path))


def check_mountpoint(path):
    """Raise UsageError unless ``path`` is an existing folder with nothing mounted on it.

    ``os.stat``, not ``os.path.exists``: a dead FUSE mount (its daemon
    killed) fails with ENOTCONN, which ``exists`` reports as "missing".
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError("mountpoint %s does not exist" % path) from None
    except OSError as e:  # ENOTCONN: "Transport endpoint is not connected"
        raise _broken_mountpoint(path, e) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError("mountpoint %s is not a folder" % path)
    try:
        if os.path.ismount(path):
            raise UsageError("mountpoint %s is busy: something is already mounted there" % path)
    except OSError as e:
        raise _broken_mountpoint(path, e) from None


def _reason(exc):
    """One line saying why ``exc`` happened (an OSError's text and file, not its repr)."""
    if isinstance(exc, OSError) and exc.strerror:
        return "%s: %s" % (exc.strerror, exc.filename) if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def pooled_session(connections):
    """A ``requests.Session`` keeping up to ``connections`` idle connections per host.

    The Client's session is shared by every FUSE worker thread (downloads,
    uploads); with the default pool of 10, more concurrent requests make
    urllib3 warn "Connection pool is full" and reconnect.
    """
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=connections, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def make_filesystem(args, on_ready=None):
    """The Client, the Remote and the operations object for ``args``."""
    from filetracker.client import Client
    from filetracker.client.remote_data_store import RemoteDataStore
    from filetracker.fuse.fs import FiletrackerFS
    from filetracker.fuse.ops import caller_pid
    from filetracker.fuse.remote import Remote

    client = Client(cache_dir=args.cache_dir, remote_store=RemoteDataStore(
        args.url, timeout=args.timeout or None, session=pooled_session(MAX_THREADS)))
    remote = Remote(args.url, timeout=args.timeout or None, quiet_after_failure=QUIET_AFTER_FAILURE,
                    caller=caller_pid)
    return FiletrackerFS(client, remote, attr_timeout=args.attr_timeout,
                         range_threshold=args.range_threshold, read_only=args.read_only,
                         on_ready=on_ready, mountpoint=args.mountpoint,
                         direct_io_above=args.direct_io_above)


def check_server(args):
    from filetracker.fuse.remote import Remote

    remote = Remote(args.url, timeout=args.timeout or DEFAULT_TIMEOUT)
    try:
        remote.ping()
    except FiletrackerError as e:
        # never the URL's user:token (safe_url); "cannot reach URL: " is said once
        url = safe_url(remote.base_url)
        detail = str(e).removeprefix("version check: cannot reach %s: " % url)
        raise UsageError("the server at %s does not answer: %s" % (url, detail)) from None
    # /version/ is open to all: whether the server takes the credentials in the URL shows on a
    # name that surely is not there (401 "invalid credentials"; a 403 is a token limited to some
    # folders, which may still be the ones wanted, and no credentials at all is the user's choice)
    if urllib.parse.urlsplit(args.url).username is None:
        return
    try:
        remote.stat("/.filetracker-fuse/credentials-check")
    except NotFoundError:
        pass
    except RemoteError as e:
        if e.status == 401:
            raise UsageError("the server at %s refuses the credentials in the URL: %s"
                             % (safe_url(remote.base_url), e.reason or e)) from None


def _fsname(url):
    """``filetracker:host:port`` for mount tables (no credentials, no commas)."""
    netloc = urllib.parse.urlsplit(safe_url(url)).netloc
    return "filetracker:" + re.sub(r"[^A-Za-z0-9.:_\[\]-]", "_", netloc)


def mount(mfusepy, args, on_ready=None):
    """Mount and serve until unmounted (blocks).  Returns the exit status.

    Raises UsageError when the file system cannot be set up (its message is
    the one line to show).
    """
    from filetracker.fuse.fs import MAX_READ

    try:
        fs = make_filesystem(args, on_ready=on_ready)
    except OSError as e:  # the cache folder cannot be made or used
        raise UsageError("cannot use the cache folder %s: %s" % (args.cache_dir, _reason(e))) from None
    # The kernel caches attributes for half of --attr-timeout and so do we:
    # a change by another client shows within --attr-timeout.
    half = args.attr_timeout / 2.0
    options = dict(
        foreground=True, nothreads=False, fsname=_fsname(args.url), subtype="filetracker",
        attr_timeout=half, entry_timeout=half, negative_timeout=0,
        # Read requests of up to MAX_READ bytes (the daemon's init repeats it).
        max_read=MAX_READ,
    )
    if (getattr(mfusepy, "fuse_version_major", 0), getattr(mfusepy, "fuse_version_minor", 0)) >= (3, 12):
        # A fixed pool of worker threads (libfuse >= 3.12 keeps idle ones), each
        # keeping its Python thread state (fastread.pin_thread_state).  Debian's
        # 3.14.0 ignores the value given to fuse_main and keeps its default, 10.
        options["max_threads"] = MAX_THREADS
    if args.read_only:
        options["ro"] = True
    if shutil.which("fusermount3"):
        options["auto_unmount"] = True  # a killed daemon leaves no dead mount behind
    try:
        mfusepy.FUSE(fs, args.mountpoint, raw_fi=True, **options)
    except RuntimeError as e:
        if fs.was_mounted:
            # libfuse reports a loop ended by SIGINT/SIGTERM as an error; the
            # unmount itself went through.
            logger.info("unmounted %s (%s)", args.mountpoint, e)
            return 0
        logger.error("mounting %s failed (%s)", args.mountpoint, e)
        return 1
    return 0


def setup_logging(args, foreground):
    level = logging.DEBUG if args.debug else logging.INFO
    if args.log:
        handler = logging.FileHandler(args.log)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s filetracker-fuse %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not args.debug:
        logging.getLogger("mfusepy").setLevel(logging.WARNING)
        logging.getLogger("urllib3").setLevel(logging.WARNING)


def _quiet(output):
    return b"".join(line for line in output.splitlines(keepends=True)
                    if not any(n in line for n in NOISE))


def daemonize_and_mount(mfusepy, args):
    """Fork; the child mounts and reports READY through a pipe; the parent waits for it."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(write_end)
        output = b""
        with os.fdopen(read_end, "rb") as pipe:
            while True:
                chunk = pipe.read1(4096) if hasattr(pipe, "read1") else pipe.read(4096)
                if not chunk:
                    break
                output += chunk
                if READY in output:
                    text = _quiet(output.replace(READY, b"")).decode("utf-8", "replace")
                    if text.strip():
                        sys.stderr.write(text)
                    return 0
        os.waitpid(pid, 0)
        text = _quiet(output).decode("utf-8", "replace").strip()
        # One line of reason follows on the same line; libfuse's longer output below.
        sep = ": " if text and "\n" not in text else ":\n"
        sys.stderr.write("filetracker-fuse: mounting %s failed%s\n"
                         % (args.mountpoint, (sep + text) if text else ""))
        return 1

    # Child: a new session, stdio on the pipe until the mount is ready.
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.chdir("/")

    def ready():
        os.write(write_end, READY)
        target = devnull
        if args.log:
            target = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, 1)
        os.dup2(target, 2)
        os.close(write_end)

    status = 1
    try:
        status = mount(mfusepy, args, on_ready=ready)
    except UsageError as e:
        os.write(2, ("%s\n" % e).encode())
    except Exception as e:  # os._exit below would swallow it: say it (stderr is the pipe)
        os.write(2, ("unexpected error: %s\n" % _reason(e)).encode())
        logger.debug("mounting failed", exc_info=True)
    finally:
        os._exit(status)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.url:
        print("filetracker-fuse: no server URL: give --url or set FILETRACKER_URL", file=sys.stderr)
        return 2
    args.mountpoint = os.path.abspath(args.mountpoint)
    if not args.cache_dir:  # unset or empty: the mount needs a cache (a Client's empty one means none)
        from filetracker.client import Client

        args.cache_dir = Client.DEFAULT_CACHE_DIR
    args.cache_dir = os.path.abspath(args.cache_dir)
    if args.log:  # the daemon works from "/"
        args.log = os.path.abspath(args.log)
    try:
        setup_logging(args, args.foreground)
    except OSError as e:  # a missing folder, a folder, no permission: a usage error, not a traceback
        print("filetracker-fuse: cannot open log file %s: %s" % (args.log, e.strerror or e), file=sys.stderr)
        return 2
    try:
        mfusepy = load_binding()
        check_mountpoint(args.mountpoint)
        check_server(args)
        if args.foreground:
            return mount(mfusepy, args, on_ready=lambda: logger.info("mounted %s (%s)", args.mountpoint,
                                                                          safe_url(args.url)))
    except UsageError as e:
        print("filetracker-fuse: %s" % e, file=sys.stderr)
        return 1
    return daemonize_and_mount(mfusepy, args)


if __name__ == "__main__":
    sys.exit(main())
