"""``filetracker-admin``: operate a filetracker cluster.

    filetracker-admin [--cluster URL[,URL...]] [--cluster-secret-file F] [--timeout S] COMMAND ...

    status [--json] [--drain URL]              nodes, ring agreement, data held, moves in progress
    add-node URL [--weight W]                  add a running node (new ring, epoch + 1)
    remove-node URL [--no-wait] [--allow-fewer-replicas]
                                               remove a member and drain it into the others
    rebalance [--dry-run] [--no-wait] [--drain URL]
                                               move data until every file is on exactly its N owners
    verify [--repair] [--drain URL]            records against blobs, replicas against each other

``--cluster`` (or ``FILETRACKER_ADMIN_URL``) names any storage node; the rest
of the cluster is found from its ring.  ``--drain URL`` adds a node that was
removed from the ring but still holds data.  Exit status: 0 success, 1
failure (a one-line reason on standard error, never a traceback), 2 usage.
Every subcommand sets ``func(args) -> exit status`` (the migration commands of
:mod:`cluster.admin.importer` are registered the same way when present).
"""

import argparse
import os
import sys

from cluster.admin.access import AdminError, ClusterAccess
from cluster.peers import base_url, base_url_list
from cluster.secret import SecretError, read_secret
from filetracker.units import seconds, timeout_seconds

ENV_URL = "FILETRACKER_ADMIN_URL"
ENV_SECRET = "FILETRACKER_CLUSTER_SECRET_FILE"


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text) from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive: %r" % text)
        return value
    return parse


def _drain_option(p):
    p.add_argument("--drain", type=base_url, action="append", default=[], metavar="URL",
                   help="a node removed from the ring that may still hold data (repeatable)")


def build_parser():
    p = argparse.ArgumentParser(prog="filetracker-admin", description="Operate a filetracker cluster.")
    p.add_argument("--cluster", metavar="URL", help="any storage node or a gateway (comma-separated list allowed; import and "
                   "compare need the gateway); "
                   "default $%s" % ENV_URL)
    p.add_argument("--cluster-secret-file", metavar="F", help="file with the cluster secret; default $%s" % ENV_SECRET)
    p.add_argument("--timeout", type=_positive(timeout_seconds), default=10.0, metavar="S",
                   help="seconds per exchange with a node (default 10)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("status", help="nodes, ring agreement, data held, moves in progress")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    _drain_option(s)
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("add-node", help="add a running node to the ring (epoch + 1)")
    s.add_argument("url", type=base_url, metavar="URL")
    s.add_argument("--weight", type=_positive(int), default=1, metavar="W", help="relative capacity (default 1)")
    s.set_defaults(func=cmd_add)

    s = sub.add_parser("remove-node", help="remove a member and drain its data into the others")
    s.add_argument("url", type=base_url, metavar="URL")
    s.add_argument("--no-wait", action="store_true", help="do not wait until it holds nothing")
    s.add_argument("--allow-fewer-replicas", action="store_true",
                   help="remove it even when fewer nodes than N are left (each file then keeps fewer copies)")
    _wait_options(s)
    s.set_defaults(func=cmd_remove)

    s = sub.add_parser("rebalance", help="move data until every file is on exactly its N owners")
    s.add_argument("--dry-run", action="store_true", help="print the plan only")
    s.add_argument("--no-wait", action="store_true", help="start the movement and return")
    _drain_option(s)
    _wait_options(s)
    s.set_defaults(func=cmd_rebalance)

    s = sub.add_parser("verify", help="check records against blobs and replicas against each other")
    s.add_argument("--repair", action="store_true", help="repair what differs")
    _drain_option(s)
    s.set_defaults(func=cmd_verify)

    try:
        from cluster.admin import importer
    except ImportError:
        importer = None
    if importer is not None:
        importer.register(sub)
    from cluster.admin import tokens  # token add|list|remove: touches only --auth-file
    tokens.register(sub)
    return p


def _wait_options(s):
    s.add_argument("--wait-timeout", type=seconds, default=0.0, metavar="S",
                   help="give up (exit 1) when not balanced after S seconds (default: never)")
    s.add_argument("--down-timeout", type=seconds, default=60.0, metavar="S",
                   help="give up when a member stays down this long (default 60)")


def _access(args):
    """The :class:`ClusterAccess` for the global options (SystemExit(2) on bad ones)."""
    text = args.cluster or os.environ.get(ENV_URL)
    if not text:
        raise UsageError("no cluster given: use --cluster URL or set %s" % ENV_URL)
    try:
        seeds = base_url_list(text)
    except argparse.ArgumentTypeError as e:
        raise UsageError("--cluster: %s" % e) from None
    if not seeds:
        raise UsageError("--cluster: no URL given")
    secret_file = args.cluster_secret_file or os.environ.get(ENV_SECRET)
    secret = None
    if secret_file:
        try:
            secret = read_secret(secret_file)
        except SecretError as e:
            raise UsageError(str(e)) from None
    return ClusterAccess(seeds, secret=secret, timeout=args.timeout)


class UsageError(Exception):
    """Bad global options found after parsing: exit status 2."""


def _tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_status(args, access):
    from cluster.admin.status import status
    return status(access, sys.stdout, drain=args.drain, as_json=args.json)


def cmd_add(args, access):
    from cluster.admin.membership import add_node
    return add_node(access, sys.stdout, args.url, weight=args.weight)


def cmd_remove(args, access):
    from cluster.admin.membership import remove_node
    return remove_node(access, _out(), args.url, wait=not args.no_wait, timeout=args.wait_timeout,
                       down_timeout=args.down_timeout, tty=_tty(sys.stdout),
                       allow_fewer_replicas=args.allow_fewer_replicas)


def cmd_rebalance(args, access):
    from cluster.admin.rebalance import rebalance
    return rebalance(access, _out(), drain=args.drain, dry_run=args.dry_run, wait=not args.no_wait,
                     timeout=args.wait_timeout, down_timeout=args.down_timeout, tty=_tty(sys.stdout))


def cmd_verify(args, access):
    from cluster.admin.verify import verify
    return verify(access, sys.stdout, drain=args.drain, repair=args.repair)


def _out():
    return sys.stdout


#: our commands take (args, access); the importer's take (args)
OURS = {cmd_status, cmd_add, cmd_remove, cmd_rebalance, cmd_verify}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.func not in OURS:
        return args.func(args)
    try:
        access = _access(args)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print("filetracker-admin: error: %s" % e, file=sys.stderr)
        return 2
    try:
        status = args.func(args, access)
        sys.stdout.flush()   # here, where a reader gone away is caught, not at the exit
        return status
    except AdminError as e:
        sys.stdout.flush()
        print("filetracker-admin: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("filetracker-admin: interrupted (run the command again to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`... | head -1`): stop quietly, as a shell tool does;
        # standard output points at /dev/null so that the exit's flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141   # 128 + SIGPIPE
    finally:
        access.close()


if __name__ == "__main__":
    sys.exit(main())
