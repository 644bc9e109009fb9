"""The shared cluster secret: read it from a file, check it in constant time.

Every request of the internal ``/_cluster/`` API carries it in the
``X-Cluster-Secret`` header when the cluster has one.
"""

import hmac

#: Request header that carries the secret on every internal request.
SECRET_HEADER = "X-Cluster-Secret"


class SecretError(ValueError):
    """The secret file cannot be read or is empty."""


def read_secret(path):
    """The secret in ``path`` (surrounding whitespace stripped); SecretError if unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SecretError("cannot read cluster secret file %s: %s" % (path, e)) from None
    if not secret:
        raise SecretError("cluster secret file %s is empty" % path)
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in secret):
        raise SecretError("cluster secret in %s must be printable ASCII without spaces" % path)
    return secret


def secret_ok(expected, given):
    """True when no secret is configured, or ``given`` equals it (constant-time compare)."""
    if not expected:
        return True
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))
