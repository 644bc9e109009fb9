"""Per-name records and the last-writer-wins merge rule: pure logic, no I/O.

A store keeps one :class:`Record` per unversioned name.  Replicas converge
because every path (a write, replication, read repair, anti-entropy) keeps the
record that :func:`merge` picks, and :func:`order_key` is a total order:

1. the higher ``version`` wins;
2. on equal versions a tombstone (``deleted``) beats data;
3. between two data records of equal version the larger ``sha256`` wins.
"""

from dataclasses import dataclass, replace

#: sha256 recorded for tombstones: no content.
TOMBSTONE_SHA256 = ""


@dataclass(frozen=True)
class Record:
    """What a store knows of one name.

    ``version`` is the Unix mtime, ``sha256`` the hex SHA-256 of the
    uncompressed content (``""`` for a tombstone), ``size`` the logical size
    in bytes, ``deleted`` marks a tombstone.
    """

    name: str
    version: int
    sha256: str = TOMBSTONE_SHA256
    size: int = 0
    deleted: bool = False

    @classmethod
    def tombstone(cls, name, version):
        return cls(name=name, version=version, sha256=TOMBSTONE_SHA256, size=0, deleted=True)

    def to_dict(self):
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "size": self.size, "deleted": self.deleted}

    @classmethod
    def from_dict(cls, d):
        return cls(name=str(d["name"]), version=int(d["version"]), sha256=str(d.get("sha256") or ""),
                   size=int(d.get("size") or 0), deleted=bool(d.get("deleted")))

    def with_name(self, name):
        return replace(self, name=name)


def order_key(record):
    """The total order of the merge rule; the greater key wins."""
    if record is None:
        return (-1, 0, "")
    return (record.version, 1 if record.deleted else 0,
            TOMBSTONE_SHA256 if record.deleted else record.sha256)


def merge(a, b):
    """Return the winner of two records of the same name (either may be None)."""
    return a if order_key(a) >= order_key(b) else b


def merge_all(records):
    """Return the winner among ``records`` (``None`` entries allowed), or None."""
    winner = None
    for r in records:
        winner = merge(winner, r)
    return winner


def beats(a, b):
    """True when ``a`` strictly wins over ``b`` (``b`` may be None)."""
    return order_key(a) > order_key(b)


def worth_copying(record, held, expired_before):
    """True when ``record`` should be copied to a replica holding ``held`` (its record of the
    name, or None): it wins (:func:`beats`), unless it is a tombstone whose version is older
    than ``expired_before`` and the replica has no record of the name at all.

    Such a replica has nothing to delete, and it may be one that has just reclaimed that
    tombstone (reclaim passes run on every node at their own times): copying it back undid
    the reclaim, with a fresh local age, so tombstones bounced between nodes for ever.
    A replica that still holds the data gets the tombstone, however old it is."""
    if not beats(record, held):
        return False
    return not (held is None and record.deleted and record.version < expired_before)
