"""Access control by tokens: the token file, request credentials, scope checks.

Pure logic, no Tornado: the servers' hook (:mod:`filetracker.server.guard`)
asks :meth:`TokenTable.decide` what to answer a request.

**Scopes.** ``read`` < ``write`` < ``admin``: a scope allows itself and every
lower one.  ``read`` is GET/HEAD of ``/files/`` and ``/list/``; ``write`` is
PUT/DELETE (any other method) of ``/files/``; every other endpoint (status,
metrics, unknown paths) needs ``read`` on the whole tree (a token without a
prefix), so a metrics scraper needs no write power; ``admin`` is reserved for
administrative endpoints and otherwise grants what ``write`` does.
``/version/`` is open (clients
negotiate before anything else) and ``/_cluster/`` is left to the cluster
secret.  A token may be limited to a name prefix (a folder): ``/p`` covers
``/p`` itself and everything under ``/p/``, not ``/pq``; listing a folder
needs the prefix to cover that folder.

**Credentials.** ``Authorization: Basic base64(user:token)`` (what ``requests``
sends for ``http://user:token@host``, so the published client works
unchanged) or ``Authorization: Bearer <token>``.  Basic with an empty
password takes the user part as the token (``http://token@host``).

**File format** (JSON lines; blank lines and ``#`` comments ignored)::

    {"user": "alice", "scope": "write", "prefix": "/problems", "salt": "<32 hex>", "sha256": "<64 hex>"}

``prefix`` may be omitted (everything).  ``sha256`` is
``SHA-256(bytes.fromhex(salt) + token.encode())``.  Why a salted SHA-256 and
not scrypt/PBKDF2: tokens are made by :func:`new_token` from 32 random bytes
(256 bits), so nobody can search for them from the hash however fast the hash
is; slow KDFs protect low-entropy passwords, which these are not, and would
cost tens of milliseconds on every request.  The salt makes the same token
hash differently in each line and rules out precomputed tables.  Comparisons
are constant-time (:func:`hmac.compare_digest`).  Tokens themselves are never
stored, logged, or put into error messages.

**File permissions.** The services read the file as their own user (the units run
as ``filetracker``) while ``filetracker-admin token`` usually runs as root, so a
new file is made mode 0640 (:data:`NEW_FILE_MODE`: its group may read, others
never) and its group must be the services' (``chgrp filetracker``).  Rewriting an
existing file (:func:`write_token_file`, ``token remove``) keeps its mode, owner
and group; ``token add`` appends in place.  A running service that cannot read
the file any more keeps its last good table and logs a warning
(:class:`TokenFile`).
"""

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import unquote

from filetracker.storage.store import fsync_dir

SCOPES = ("read", "write", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
_USER_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
#: Bytes of randomness in a new token (encoded as 43 URL-safe characters).
TOKEN_BYTES = 32
SALT_BYTES = 16
#: What a 401 answer carries, so browsers and curl know Basic is accepted.
WWW_AUTHENTICATE = 'Basic realm="filetracker", charset="UTF-8"'
#: Mode of a token file made by :func:`add_token`: the owner (root) writes, the
#: services' group reads, nobody else.
NEW_FILE_MODE = 0o640
#: A service that cannot use its token file repeats its warning this often (seconds).
WARN_AGAIN_AFTER = 600.0

log = logging.getLogger("filetracker.auth")


class AuthFileError(ValueError):
    """The token file cannot be read or has a malformed line."""


# ---------------------------------------------------------------- tokens


def new_token():
    """A fresh random token (URL-safe text, usable in ``http://user:token@host``)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token, salt_hex):
    """Hex SHA-256 of ``salt + token`` (``salt_hex``: the salt as hex text)."""
    return hashlib.sha256(bytes.fromhex(salt_hex) + token.encode("utf-8")).hexdigest()


def normalize_prefix(prefix):
    """``prefix`` as stored: absolute, no trailing ``/`` (``"/"`` for everything).

    Raises :class:`ValueError` for a relative prefix or one with ``.``/``..``
    components.
    """
    if prefix is None or prefix == "":
        return "/"
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ValueError("prefix must be an absolute name such as /problems: %r" % (prefix,))
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts) or any(c in prefix for c in "\0@"):
        raise ValueError("invalid prefix: %r" % (prefix,))
    return "/" + "/".join(parts)


def prefix_covers(prefix, name):
    """True when folder ``prefix`` (normalised) covers ``name``."""
    if prefix == "/":
        return True
    return name == prefix or name.startswith(prefix + "/")


@dataclass(frozen=True)
class Token:
    """One line of the token file (the token itself is not kept, only its hash)."""

    user: str
    scope: str
    prefix: str
    salt: str
    sha256: str

    def matches(self, token):
        """True when ``token`` is this entry's token (constant-time compare)."""
        return hmac.compare_digest(hash_token(token, self.salt), self.sha256)

    def allows(self, scope, name=None):
        """True when this token grants ``scope`` on ``name`` (``None``: no name involved)."""
        if _RANK[self.scope] < _RANK[scope]:
            return False
        return name is None or prefix_covers(self.prefix, name)

    def to_json(self):
        d = {"user": self.user, "scope": self.scope}
        if self.prefix != "/":
            d["prefix"] = self.prefix
        d.update(salt=self.salt, sha256=self.sha256)
        return json.dumps(d, sort_keys=False)

    @classmethod
    def from_dict(cls, d):
        """Validate a parsed line; raises :class:`ValueError` with the reason."""
        if not isinstance(d, dict):
            raise ValueError("a line must be a JSON object")
        unknown = set(d) - {"user", "scope", "prefix", "salt", "sha256"}
        if unknown:
            raise ValueError("unknown keys: %s" % ", ".join(sorted(unknown)))
        user, scope = d.get("user"), d.get("scope")
        salt, digest = d.get("salt"), d.get("sha256")
        if not isinstance(user, str) or not _USER_RE.match(user):
            raise ValueError("user must be 1-64 characters of A-Z a-z 0-9 . _ @ + -")
        if scope not in SCOPES:
            raise ValueError("scope must be one of %s" % ", ".join(SCOPES))
        if not isinstance(salt, str) or not _HEX_RE.match(salt) or len(salt) % 2 or len(salt) < 16:
            raise ValueError("salt must be hex (at least 8 bytes)")
        if not isinstance(digest, str) or not _HEX_RE.match(digest) or len(digest) != 64:
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return cls(user=user, scope=scope, prefix=normalize_prefix(d.get("prefix")), salt=salt, sha256=digest)


def make_token(user, scope, prefix=None, token=None, salt=None):
    """A new :class:`Token` entry and its secret text: ``(entry, token_text)``.

    ``token`` and ``salt`` (hex) are random unless given (tests pin them).
    """
    token = new_token() if token is None else token
    salt = secrets.token_hex(SALT_BYTES) if salt is None else salt
    entry = Token.from_dict({"user": user, "scope": scope, "prefix": prefix, "salt": salt,
                             "sha256": hash_token(token, salt)})
    return entry, token


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """What a request presented: ``user`` (None for Bearer) and the token text."""

    user: str | None
    token: str

    def __repr__(self):  # never print the token, even by accident
        return "Credentials(user=%r, token=<hidden>)" % (self.user,)


class BadCredentials(ValueError):
    """An ``Authorization`` header that cannot be parsed (answered 401)."""


def parse_authorization(header):
    """Credentials in an ``Authorization`` header value; ``None`` when absent.

    Raises :class:`BadCredentials` for an unsupported scheme or malformed value.
    """
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        if not value or " " in value:
            raise BadCredentials("malformed Bearer credentials")
        return Credentials(None, value)
    if scheme == "basic":
        try:
            text = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            raise BadCredentials("malformed Basic credentials (base64 of user:token expected)")
        user, sep, token = text.partition(":")
        if not sep:
            raise BadCredentials("malformed Basic credentials (user:token expected)")
        if not token:  # http://TOKEN@host: the user part is the token
            if not user:
                raise BadCredentials("empty Basic credentials")
            return Credentials(None, user)
        return Credentials(user, token)
    raise BadCredentials("unsupported authorization scheme (use Basic or Bearer)")


# ---------------------------------------------------------------- what a request needs


@dataclass(frozen=True)
class Need:
    """A request needs ``scope`` on ``name`` (``None``: no name, e.g. an admin endpoint)."""

    scope: str
    name: str | None


def _name_of(rest):
    """The unversioned name of a ``/files/`` or ``/list/`` path remainder (percent-decoded)."""
    name = "/" + unquote(rest, errors="replace")
    base, sep, version = name.rpartition("@")
    if sep and version.isdigit() and "/" not in version:
        name = base
    return name


def required_access(method, path):
    """What a request with ``method`` on URL path ``path`` (still percent-encoded) needs.

    ``None`` when the endpoint is open to everyone (``/version``) or guarded
    by something else (``/_cluster/``: the cluster secret).
    """
    if path in ("/version", "/version/") or path == "/_cluster" or path.startswith("/_cluster/"):
        return None
    if path.startswith("/files/"):
        scope = "read" if method in ("GET", "HEAD") else "write"
        return Need(scope, _name_of(path[len("/files/"):]))
    if path == "/list" or path.startswith("/list/"):
        folder = _name_of(path[len("/list/"):]) if path.startswith("/list/") else "/"
        if folder != "/":
            folder = folder.rstrip("/") or "/"
        return Need("read", folder)
    return Need("read", "/")


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """The answer to a request: ``status`` 200 (go on), 401 or 403, a message, the user."""

    status: int
    message: str = ""
    user: str | None = None

    @property
    def allowed(self):
        return self.status == 200


class TokenTable:
    """The tokens of one file, checked against requests."""

    def __init__(self, tokens=()):
        self.tokens = tuple(tokens)

    def __len__(self):
        return len(self.tokens)

    @classmethod
    def parse(cls, text, source="<text>"):
        """Parse the JSON-lines format; :class:`AuthFileError` names the bad line."""
        tokens = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                tokens.append(Token.from_dict(json.loads(line)))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                raise AuthFileError("%s:%d: %s" % (source, lineno, e)) from None
        return cls(tokens)

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except PermissionError:
            raise AuthFileError("cannot read token file %s: permission denied to uid %d (its group must be "
                                "this service's group, mode 640: chgrp GROUP %s; chmod 640 %s)"
                                % (path, os.geteuid(), path, path)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise AuthFileError("cannot read token file %s: %s" % (path, e)) from None
        return cls.parse(text, path)

    def authenticate(self, creds):
        """The :class:`Token` entry ``creds`` prove, or ``None``."""
        for entry in self.tokens:
            if creds.user is not None and creds.user != entry.user:
                continue
            if entry.matches(creds.token):
                return entry
        return None

    def decide(self, authorization, method, path):
        """Decide on a request: its ``Authorization`` header value, method and URL path."""
        need = required_access(method, path)
        if need is None:
            return Decision(200)
        try:
            creds = parse_authorization(authorization)
        except BadCredentials as e:
            return Decision(401, str(e))
        if creds is None:
            return Decision(401, "authentication required: give a token as HTTP Basic user:token "
                                 "(http://user:token@host) or Authorization: Bearer")
        entry = self.authenticate(creds)
        if entry is None:
            return Decision(401, "invalid credentials")
        if entry.allows(need.scope, need.name):
            return Decision(200, user=entry.user)
        where = "" if entry.prefix == "/" else " under %s" % entry.prefix
        what = need.name if need.name is not None else "this endpoint"
        return Decision(403, "user %s (scope %s%s) may not %s %s" % (
            entry.user, entry.scope, where, _VERB[need.scope], what), user=entry.user)


_VERB = {"read": "read", "write": "write", "admin": "use (admin scope needed)"}


class TokenFile:
    """A :class:`TokenTable` that follows its file: re-read when it changes.

    The file's mtime and size are looked at most every ``check_interval``
    seconds; a file that became unreadable or malformed keeps the last good
    table (``last_error`` says why), so a typo never opens the server.  That
    is logged as a warning (again every :data:`WARN_AGAIN_AFTER` seconds while
    it lasts: tokens removed from the file meanwhile stay valid), and the
    recovery as an info line.
    """

    def __init__(self, path, check_interval=1.0, clock=time.monotonic):
        self.path = path
        self.check_interval = check_interval
        self._clock = clock
        self.last_error = None
        self._warned = None
        self._stamp = self._stat()
        self.table = TokenTable.load(path)  # AuthFileError at start: refuse to run
        self._checked = clock()

    def _stat(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self):
        """The table to use now (re-read first when the file changed)."""
        now = self._clock()
        if now - self._checked >= self.check_interval:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self.table = TokenTable.load(self.path)
                except AuthFileError as e:
                    self._warn(str(e), now)
                else:
                    if self.last_error is not None:
                        log.info("token file %s read again: %d tokens", self.path, len(self.table))
                    self.last_error = None
                    self._stamp = stamp
        return self.table

    def _warn(self, error, now):
        if error != self.last_error or self._warned is None or now - self._warned >= WARN_AGAIN_AFTER:
            log.warning("%s; still using the %d tokens read before it changed (a token removed from "
                        "the file stays valid until it can be read)", error, len(self.table))
            self._warned = now
        self.last_error = error

    def decide(self, authorization, method, path):
        return self.current().decide(authorization, method, path)


@contextlib.contextmanager
def _editing(path):
    """Hold the lock that every change of the token file at ``path`` takes.

    :func:`remove_tokens` replaces the file by a new one (a rename), so a token that
    :func:`add_token` appended meanwhile to the old file would be lost although it
    was shown as added: changes take turns.  The lock is a ``flock`` of the folder
    holding the file (symbolic links followed): it outlives the file's renames,
    needs no lock file beside it, and is released by the kernel if the tool dies.
    """
    fd = os.open(os.path.dirname(os.path.realpath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def add_token(path, user, scope, prefix=None):
    """Append a new token line to the file at ``path`` (created with mode
    :data:`NEW_FILE_MODE` if missing; an existing file keeps its mode, owner and group).

    Returns ``(entry, token_text)``; the token text is shown once, never stored.
    Raises :class:`ValueError` for a bad user/scope/prefix and
    :class:`AuthFileError` when the existing file is malformed.
    """
    entry, token = make_token(user, scope, prefix)
    with _editing(path):
        if os.path.exists(path):
            TokenTable.load(path)  # refuse to append to a file the servers would reject
        _append_token(path, entry)
    return entry, token


def _append_token(path, entry):
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
        os.fchmod(fd, NEW_FILE_MODE)  # whatever the umask
    except FileExistsError:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    with os.fdopen(fd, "a+b") as f:
        lead = b""
        size = f.seek(0, os.SEEK_END)
        if size > 0:
            f.seek(size - 1)
            lead = b"" if f.read(1) == b"\n" else b"\n"  # hand-edited, no final newline
        f.write(lead + entry.to_json().encode("ascii") + b"\n")
        f.flush()
        os.fsync(f.fileno())


def write_token_file(path, tokens):
    """Replace the token file at ``path`` by one line per :class:`Token` of ``tokens``.

    Atomic (a server never reads half a file): a new file in the same folder,
    given the old file's mode, owner and group (``fchmod``/``fchown``) before it
    is renamed over it, so the services may still read it; a file that did not
    exist gets :data:`NEW_FILE_MODE`.  A symbolic link is followed (its target
    is replaced).  Raises :class:`AuthFileError`, the file unchanged, when the
    owner or group cannot be kept (e.g. not run as root).
    """
    target = os.path.realpath(path)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    folder = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(e.to_json() + "\n" for e in tokens))
            f.flush()
            if old is None:
                os.fchmod(f.fileno(), NEW_FILE_MODE)
            else:
                mine = os.fstat(f.fileno())
                if (mine.st_uid, mine.st_gid) != (old.st_uid, old.st_gid):
                    try:
                        os.fchown(f.fileno(), old.st_uid, old.st_gid)
                    except PermissionError:
                        raise AuthFileError("cannot keep the owner and group of %s (uid %d, gid %d) on its "
                                            "new version: permission denied (run as root or as its owner); "
                                            "the file is unchanged" % (path, old.st_uid, old.st_gid)) from None
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))  # after fchown, which may clear bits
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # the rename itself durable too (best effort: the new file is in place either way)
        fsync_dir(folder)
    except OSError:
        pass


def remove_tokens(path, user):
    """Remove every token of ``user`` from the file at ``path`` (:func:`write_token_file`).

    Returns how many were removed (0: the file is not rewritten).  Raises
    :class:`AuthFileError` when the file cannot be read or is malformed.
    """
    with _editing(path):
        table = TokenTable.load(path)
        keep = [e for e in table.tokens if e.user != user]
        removed = len(table.tokens) - len(keep)
        if removed:
            write_token_file(path, keep)
    return removed
