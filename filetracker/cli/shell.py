"""The ``filetracker`` command: put, get, cat, rm, version, ls, size.

Command lines of the 2.x tool keep working with the same output (see
COMPAT.md), for example::

    filetracker -r URL put LOCAL_FILE NAME      # prints the versioned name
    filetracker -r URL get NAME LOCAL_FILE
    filetracker -r URL cat NAME
    filetracker -r URL rm NAME
    filetracker -r URL version NAME

``put`` and ``rm`` print ``Settled for protocol version N`` first when they talk
to a server, as the 2.x tool does (its scripts' output stays byte-identical).

Exit status: 0 success, 1 failure (one line on standard error; a missing file
says "not found"), 2 usage error.  Defaults come from ``FILETRACKER_URL`` and
``FILETRACKER_DIR``.
"""

import argparse
import logging
import os
import sys

from filetracker.cli.progress import make_progress_factory
from filetracker.client import Client
from filetracker.client.remote_data_store import RemoteDataStore
from filetracker.errors import (
    NO_SUCH_ENDPOINT,
    FiletrackerError,
    NotFoundError,
    RemoteError,
    VersionNotFoundError,
)
from filetracker.units import timeout_seconds

PROG = "filetracker"


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Store and fetch files in filetracker.",
        epilog="Options are filled from FILETRACKER_URL and FILETRACKER_DIR when not given.")
    parser.add_argument("-r", "--remote-url", "--url", dest="remote_url", default=None,
                        help="URL of the filetracker server (default: $FILETRACKER_URL)")
    parser.add_argument("-c", "--cache-dir", dest="cache_dir", default=None,
                        help="local cache folder (default: $FILETRACKER_DIR or ~/.filetracker-store)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log what happens")
    parser.add_argument("--timeout", type=timeout_seconds, default=None, help="seconds to wait for the server")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def fetch_options(p):
        p.add_argument("-c", "--no-cache", dest="add_to_cache", action="store_false",
                       help="do not store the file in the local cache")
        p.add_argument("-f", "--refresh", dest="force_refresh", action="store_true",
                       help="do not read from the local cache")

    p = sub.add_parser("put", help="store LOCAL_FILE as NAME; print the versioned name")
    p.add_argument("--no-local-cache", dest="to_local", action="store_false", help="do not store in the cache")
    p.add_argument("--no-remote-cache", dest="to_remote", action="store_false", help="do not store on the server")
    p.add_argument("local_file", metavar="LOCAL_FILE")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("get", help="save NAME as LOCAL_FILE")
    fetch_options(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("local_file", metavar="LOCAL_FILE")

    p = sub.add_parser("cat", help="write NAME to standard output")
    fetch_options(p)
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("rm", help="delete NAME")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("version", help="print the newest version of NAME")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("size", help="print the size of NAME in bytes")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("ls", help="list the names under PATH (default /)")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    return parser


def cmd_put(client, args, out):
    out.write(client.put_file(args.name, args.local_file, to_local_store=args.to_local,
                              to_remote_store=args.to_remote) + "\n")


def cmd_get(client, args, out):
    client.get_file(args.name, args.local_file, add_to_cache=args.add_to_cache,
                    force_refresh=args.force_refresh)


class OutputClosed(Exception):
    """Whoever read our standard output stopped (``filetracker cat big | head``)."""


def cmd_cat(client, args, out):
    # 2.x cat was a get with the cache on: the file stays in the cache unless -c (--no-cache)
    stream, _ = client.get_stream(args.name, force_refresh=args.force_refresh, serve_from_cache=args.add_to_cache)
    out.flush()
    with stream:
        while True:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            try:
                sys.stdout.buffer.write(chunk)
            except BrokenPipeError:
                raise OutputClosed() from None
    sys.stdout.buffer.flush()


def cmd_rm(client, args, out):
    client.delete_file(args.name)


def cmd_version(client, args, out):
    out.write("%d\n" % client.file_version(args.name))


def cmd_size(client, args, out):
    out.write("%d\n" % client.file_size(args.name))


def cmd_ls(client, args, out):
    if client.remote_store is None:
        raise FiletrackerError("ls needs a server (-r URL or FILETRACKER_URL)")
    folder = "/" + args.path.strip("/")
    prefix = folder.rstrip("/") + "/"
    for name in client.list_remote_files(subpath=folder):
        out.write(prefix + name + "\n")


COMMANDS = {"put": cmd_put, "get": cmd_get, "cat": cmd_cat, "rm": cmd_rm,
            "version": cmd_version, "size": cmd_size, "ls": cmd_ls}
#: Commands after which the 2.x tool had printed "Settled for protocol version N".
ANNOUNCE_PROTOCOL = {"put", "rm"}


def make_client(args, out):
    url = args.remote_url or os.environ.get("FILETRACKER_URL")
    remote = None
    if url:
        announce = None
        if args.command in ANNOUNCE_PROTOCOL:
            def announce(version):
                out.write("Settled for protocol version %d\n" % version)
                out.flush()
        remote = RemoteDataStore(url, timeout=args.timeout, on_negotiated=announce,
                                 progress_factory=make_progress_factory())
    return Client(remote_store=remote, cache_dir=args.cache_dir)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeout is not None and not args.timeout > 0:
        parser.error("--timeout must be a positive number of seconds")
    logging.basicConfig(format="%(asctime)-15s %(name)s %(levelname)s: %(message)s",
                        level=logging.DEBUG if args.verbose else logging.WARNING)
    out = sys.stdout
    try:
        client = make_client(args, out)
        COMMANDS[args.command](client, args, out)
        out.flush()
    except (OutputClosed, BrokenPipeError):   # BrokenPipeError: `filetracker ls / | head -1`
        # as a tool killed by SIGPIPE ends (128 + 13), quietly: the reader wanted no more; point
        # standard output at /dev/null so the interpreter's last flush does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except VersionNotFoundError as e:   # "version N of NAME is not available (the server has M)"
        return _fail(str(e), e, args)
    except NotFoundError as e:
        if e.reason.startswith(NO_SUCH_ENDPOINT + ":"):
            # the server has no such path at all: the URL is wrong, not the name
            return _fail("%s (give the server's base URL, without a path)" % e, e, args)
        return _fail("not found: %s" % getattr(args, "name", ""), e, args)
    except RemoteError as e:
        return _fail(str(e), e, args)
    except (FiletrackerError, ValueError, OSError) as e:
        return _fail(str(e) or type(e).__name__, e, args)
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(message, exc, args):
    sys.stdout.flush()
    print("%s: error: %s" % (PROG, message.splitlines()[0] if message else "failed"), file=sys.stderr)
    if args.verbose:
        print("%s: detail: %s" % (PROG, exc), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
