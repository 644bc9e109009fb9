"""``filetracker-admin token add|list|remove``: manage an access-control token file.

    filetracker-admin token add --auth-file F --user U --scope read|write|admin [--prefix /p]
    filetracker-admin token list --auth-file F
    filetracker-admin token remove --auth-file F --user U

``add`` appends a line (file format: :mod:`filetracker.auth`) and prints the
new random token once on standard output; only its salted hash is stored.
A new file is made mode 0640 (the services' group must own it: ``chgrp
filetracker F``); ``remove`` rewrites the file atomically keeping its mode,
owner and group (:func:`filetracker.auth.write_token_file`).
Servers started with ``--auth-file F`` pick up changes within a second.
These commands need no cluster (they only touch the file), so they also serve
a single ``filetracker-server``.  Exit status: 0 success, 1 failure (one line
on standard error).
"""

import sys

from filetracker.auth import SCOPES, AuthFileError, TokenTable, add_token, remove_tokens


def register(sub):
    """Add the ``token`` command to the admin's subparsers (func(args) -> exit status)."""
    t = sub.add_parser("token", help="manage access tokens of --auth-file (no cluster needed)")
    tsub = t.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True

    s = tsub.add_parser("add", help="create a token and print it (shown only once)")
    s.add_argument("--auth-file", required=True, metavar="F")
    s.add_argument("--user", required=True, metavar="U")
    s.add_argument("--scope", required=True, choices=SCOPES)
    s.add_argument("--prefix", default=None, metavar="/P", help="limit the token to names under /P")
    s.set_defaults(func=cmd_add)

    s = tsub.add_parser("list", help="users, scopes and prefixes (never the tokens)")
    s.add_argument("--auth-file", required=True, metavar="F")
    s.set_defaults(func=cmd_list)

    s = tsub.add_parser("remove", help="remove every token of a user")
    s.add_argument("--auth-file", required=True, metavar="F")
    s.add_argument("--user", required=True, metavar="U")
    s.set_defaults(func=cmd_remove)


def _fail(message):
    print("filetracker-admin: %s" % message, file=sys.stderr)
    return 1


def cmd_add(args):
    try:
        entry, token = add_token(args.auth_file, args.user, args.scope, args.prefix)
    except (ValueError, OSError) as e:  # AuthFileError is a ValueError
        return _fail(e)
    print(token)
    where = "" if entry.prefix == "/" else " under %s" % entry.prefix
    article = "an" if entry.scope[:1] in "aeiou" else "a"
    print("added %s %s token for %s%s to %s (store the token now: only its hash is kept)"
          % (article, entry.scope, entry.user, where, args.auth_file), file=sys.stderr)
    return 0


def cmd_list(args):
    try:
        table = TokenTable.load(args.auth_file)
    except AuthFileError as e:
        return _fail(e)
    for entry in table.tokens:
        print("%s\t%s\t%s" % (entry.user, entry.scope, entry.prefix))
    return 0


def cmd_remove(args):
    try:
        # atomic rewrite keeping the file's mode, owner and group (the services must still read it)
        removed = remove_tokens(args.auth_file, args.user)
    except (ValueError, OSError) as e:  # AuthFileError is a ValueError
        return _fail(e)
    if not removed:
        return _fail("no token of user %s in %s" % (args.user, args.auth_file))
    print("removed %d token(s) of %s" % (removed, args.user), file=sys.stderr)
    return 0
