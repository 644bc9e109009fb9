"""Placement: partitions of the name space and the ring that places them on nodes.

Pure logic, no I/O.  Two functions decide where every file lives, and both are
pinned by unit tests with fixed vectors (changing them would silently move
every file of every existing cluster):

* :func:`partition_of` maps an unversioned name to one of ``2**partition_power``
  partitions: the top ``partition_power`` bits of the MD5 of its UTF-8 bytes.
* :class:`Ring` places partitions on nodes with consistent hashing (uhashring's
  ketama continuum, node weights honoured).  A partition's *preference list*
  is every node, in the order met walking the continuum clockwise from the
  partition's point; the first ``n_replicas`` are its *owners*, the rest its
  handoff order.  The whole table is computed once when the ring is built, so
  a lookup is a list index.

Why ketama gives the movement property we need: adding a node only inserts its
points into the continuum, so each partition's walk meets the old nodes in the
same order with the new node somewhere in between.  An owner set therefore
either stays the same or swaps exactly one old owner for the new node (with
equal weights; a different weight changes every node's point count).
"""

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from uhashring import HashRing

#: ketama points per node of weight 1 are VNODES * 4 (uhashring's 4 hashes per vnode).
VNODES = 160
DEFAULT_PARTITION_POWER = 10
DEFAULT_REPLICAS = 3
MAX_PARTITION_POWER = 20


def partition_of(name, partition_power):
    """Partition (``0 .. 2**partition_power - 1``) of a file name.

    The name should be unversioned; a valid ``@<digits>`` version suffix is
    ignored, so ``/a@5`` and ``/a`` share a partition.  Fixed forever: the top
    bits of ``md5(name.encode("utf-8"))``.
    """
    base, sep, version = name.rpartition("@")
    if sep and version.isascii() and version.isdigit():
        name = base
    digest = hashlib.md5(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - int(partition_power))


@dataclass(frozen=True, order=True)
class Node:
    """A ring member.  ``id`` is its advertised URL (unique); ``url`` where to reach it."""

    id: str
    url: str
    weight: int = 1

    def to_dict(self):
        return {"id": self.id, "url": self.url, "weight": self.weight}

    @classmethod
    def from_dict(cls, d):
        """A node from its description (``to_dict``'s, or a bare URL); RingError unless its
        URL is ``http(s)://HOST[:PORT]`` (a node without one could never be reached)."""
        if isinstance(d, str):
            return cls(id=d, url=_checked_url(d), weight=1)
        url = d.get("url") or d["id"]
        if not isinstance(url, str):
            raise RingError("node URL must be a string: %r" % (d,))
        return cls(id=str(d["id"]), url=_checked_url(url), weight=int(d.get("weight", 1)))


def _checked_url(url):
    """``url`` without a trailing ``/``; RingError unless it is ``http(s)://HOST[:PORT]``."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    try:
        parts.port   # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError:
        raise RingError("node URL has an invalid port: %r" % url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RingError("node URL must be http(s)://HOST:PORT: %r" % url)
    return url


class RingError(ValueError):
    """A ring description that cannot be used (no nodes, bad weight, bad power)."""


class Ring:
    """An immutable placement of ``2**partition_power`` partitions on ``nodes``.

    ``replicas`` is the configured N; :attr:`n_replicas` is N capped at the
    number of nodes (the owners of a partition are that many distinct nodes).
    Nodes are kept sorted by id, so a ring is a pure function of its
    description whatever order the members were given in.
    """

    __slots__ = ("epoch", "partition_power", "replicas", "nodes", "_by_id", "_prefs", "_owned")

    def __init__(self, nodes, epoch=1, replicas=DEFAULT_REPLICAS, partition_power=DEFAULT_PARTITION_POWER):
        nodes = tuple(sorted(Node.from_dict(n) if not isinstance(n, Node) else n for n in nodes))
        if not nodes:
            raise RingError("a ring needs at least one node")
        ids = [n.id for n in nodes]
        if len(set(ids)) != len(ids):
            raise RingError("duplicate node ids in ring: %s" % ids)
        for n in nodes:
            if not isinstance(n.weight, int) or n.weight < 1:
                raise RingError("node weight must be a positive integer: %r" % (n,))
        partition_power = int(partition_power)
        if not 0 <= partition_power <= MAX_PARTITION_POWER:
            raise RingError("partition power must be in 0..%d" % MAX_PARTITION_POWER)
        if int(replicas) < 1:
            raise RingError("replicas must be at least 1")
        self.epoch = int(epoch)
        self.partition_power = partition_power
        self.replicas = int(replicas)
        self.nodes = nodes
        self._by_id = {n.id: n for n in nodes}
        self._prefs = self._compute_preferences()
        n = self.n_replicas
        short = sum(1 for pl in self._prefs if len(pl) < n)
        if short:
            # ketama gives a node points in proportion to its share of the total weight: a node
            # with too small a share gets none and is nobody's owner, so partitions end up with
            # fewer than N owners (one copy of every file, while N was asked for)
            raise RingError("these weights leave %d of %d partitions with fewer than %d owners (a node "
                            "with too small a share of the total weight gets no place on the ring): %s"
                            % (short, len(self._prefs), n,
                               ", ".join("%s weight %d" % (node.id, node.weight) for node in nodes)))
        self._owned = {node.id: frozenset(p for p, pl in enumerate(self._prefs) if node in pl[:n])
                       for node in nodes}

    def _compute_preferences(self):
        # Nodes are added in id order so that hash collisions on the continuum
        # resolve the same way everywhere.
        conf = {n.id: {"weight": n.weight, "vnodes": VNODES} for n in self.nodes}
        ring = HashRing(nodes=conf, hash_fn="ketama")
        prefs = []
        for p in range(self.partitions):
            ids = [c["nodename"] for c in ring.range("partition-%d" % p, unique=True)]
            prefs.append(tuple(self._by_id[i] for i in ids))
        return tuple(prefs)

    # ------------------------------------------------------------------ queries

    @property
    def partitions(self):
        """Number of partitions, ``2**partition_power``."""
        return 1 << self.partition_power

    @property
    def n_replicas(self):
        """Owners per partition: ``replicas`` capped at the number of nodes."""
        return min(self.replicas, len(self.nodes))

    def partition(self, name):
        return partition_of(name, self.partition_power)

    def preference_list(self, partition):
        """Every node for ``partition``: owners first, then the handoff order (tuple of Node)."""
        return self._prefs[partition]

    def partition_owners(self, partition):
        return self._prefs[partition][:self.n_replicas]

    def owners(self, name):
        """The owner nodes of ``name`` (tuple of Node, first-preferred first)."""
        return self.partition_owners(self.partition(name))

    def handoffs(self, partition):
        return self._prefs[partition][self.n_replicas:]

    def node(self, node_id):
        """The member with this id, or None."""
        return self._by_id.get(node_id)

    def owned_partitions(self, node_id):
        """Frozen set of the partitions ``node_id`` owns (empty if not a member)."""
        return self._owned.get(node_id, frozenset())

    def owns(self, node_id, partition):
        return partition in self._owned.get(node_id, ())

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self):
        """msgpack/JSON-able description (the ``GET /_cluster/ring`` body)."""
        return {"epoch": self.epoch, "partition_power": self.partition_power, "replicas": self.replicas,
                "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(nodes=[Node.from_dict(n) for n in d["nodes"]], epoch=int(d["epoch"]),
                       replicas=int(d.get("replicas", DEFAULT_REPLICAS)),
                       partition_power=int(d.get("partition_power", DEFAULT_PARTITION_POWER)))
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as e:
            if isinstance(e, RingError):
                raise
            raise RingError("malformed ring description: %s" % e) from None

    @classmethod
    def initial(cls, member_urls, replicas=DEFAULT_REPLICAS, partition_power=DEFAULT_PARTITION_POWER):
        """Epoch-1 ring of the given members (ids = URLs, weight 1), independent of their order."""
        urls = sorted({u.rstrip("/") for u in member_urls})
        return cls([Node(u, u, 1) for u in urls], epoch=1, replicas=replicas, partition_power=partition_power)

    def with_changes(self, add=(), remove=(), weights=None, epoch=None):
        """A new ring (``epoch``, default epoch + 1) with nodes added/removed/reweighted (for the admin)."""
        weights = dict(weights or {})
        kept = [n for n in self.nodes if n.id not in set(remove)]
        nodes = [Node(n.id, n.url, int(weights.get(n.id, n.weight))) for n in kept]
        known = {n.id for n in nodes}
        for a in add:
            a = a if isinstance(a, Node) else Node.from_dict(a)
            if a.id not in known:
                nodes.append(a)
                known.add(a.id)
        return Ring(nodes, epoch=self.epoch + 1 if epoch is None else epoch, replicas=self.replicas,
                    partition_power=self.partition_power)

    def same_layout(self, other):
        """True when both rings describe the same members, N and P (epochs may differ)."""
        return (self.nodes == other.nodes and self.replicas == other.replicas
                and self.partition_power == other.partition_power)

    def __eq__(self, other):
        return isinstance(other, Ring) and self.epoch == other.epoch and self.same_layout(other)

    def __hash__(self):
        return hash((self.epoch, self.nodes, self.replicas, self.partition_power))

    def __repr__(self):
        return "Ring(epoch=%d, P=%d, N=%d, nodes=%s)" % (
            self.epoch, self.partition_power, self.replicas, [n.id for n in self.nodes])


@dataclass(frozen=True)
class Move:
    """One partition whose owner set changes: ``removed`` old owners, ``added`` new ones (node ids)."""

    partition: int
    removed: tuple
    added: tuple


def moved_partitions(old, new):
    """The partitions whose owner set differs between two rings of the same partition power.

    Returns a list of :class:`Move`, by partition.  The number of replica copies
    that must move is ``sum(len(m.added) for m in moves)``.
    """
    if old.partition_power != new.partition_power:
        raise RingError("rings with different partition powers cannot be compared")
    moves = []
    for p in range(new.partitions):
        before = [n.id for n in old.partition_owners(p)]
        after = [n.id for n in new.partition_owners(p)]
        if set(before) != set(after):
            moves.append(Move(p, tuple(i for i in before if i not in after),
                              tuple(i for i in after if i not in before)))
    return moves


def moved_fraction(old, new):
    """Fraction of replica copies that move: added owner slots / all owner slots of ``new``."""
    moved = sum(len(m.added) for m in moved_partitions(old, new))
    return moved / float(new.partitions * new.n_replicas)
