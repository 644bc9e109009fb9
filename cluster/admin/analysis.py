"""Pure judgement of a cluster snapshot: is every file on exactly its N owners?

Input: a :class:`~cluster.ring.Ring` and the :class:`~cluster.admin.access.NodeView`
of each node (its ``{partition: digest}``).  Per-partition digests are enough to
decide placement without listing records:

* a node holding a partition it does not own holds *foreign* data (a moved
  partition or a hint) that must reach the owners and then leave it;
* the owners of a partition that are up must hold identical digests (an owner
  without the partition counts as the empty digest), else the partition is
  *split*: some owner lacks or has older records.

The cluster is balanced when no member is down, nothing is foreign and
nothing is split.  :func:`record_problems` refines a partition to the records
that differ, from the record lists of its holders.
"""

from collections import Counter
from dataclasses import dataclass, field

from filetracker.records import merge_all, worth_copying

#: Digest of a partition with no record (SHA-256 of nothing), as the nodes compute it.
EMPTY_DIGEST = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class Move:
    """Partition ``partition`` must be copied from ``sources`` to ``targets`` (node ids);
    ``drop`` are the non-owners that must let it go afterwards."""

    partition: int
    sources: tuple
    targets: tuple
    drop: tuple


@dataclass
class Analysis:
    ring: object
    down: list = field(default_factory=list)         # ids of ring members that did not answer
    foreign: dict = field(default_factory=dict)      # node id -> sorted partitions held, not owned
    split: list = field(default_factory=list)        # partitions whose up owners disagree
    moves: list = field(default_factory=list)        # Move, by partition

    @property
    def balanced(self):
        return not self.down and not self.foreign and not self.split

    @property
    def problem_partitions(self):
        return [m.partition for m in self.moves]

    def pairs(self):
        """``Counter({(source, target): partitions})``: the plan in one table."""
        c = Counter()
        for m in self.moves:
            src = m.drop[0] if m.drop else (m.sources[0] if m.sources else "?")
            for t in m.targets:
                c[(src, t)] += 1
        return c


def analyze(ring, views):
    """The :class:`Analysis` of ``views`` (up members, drained nodes) against ``ring``."""
    a = Analysis(ring=ring)
    up = [v for v in views if v.up]
    a.down = [v.id for v in views if v.member and not v.up]
    held = {}
    for v in up:
        owned = ring.owned_partitions(v.id) if v.member else frozenset()
        foreign = sorted(p for p in v.digests if p not in owned)
        if foreign:
            a.foreign[v.id] = foreign
        for p in v.digests:
            held.setdefault(p, []).append(v)
    by_id = {v.id: v for v in up}
    for p in sorted(held):
        owners = [by_id[n.id] for n in ring.partition_owners(p) if n.id in by_id]
        digests = [o.digests.get(p, EMPTY_DIGEST) for o in owners]
        drop = tuple(v.id for v in held[p] if not ring.owns(v.id, p) or not v.member)
        split = len(set(digests)) > 1
        if split:
            a.split.append(p)
        if not split and not drop:
            continue
        reference = _reference_digest(p, held[p], drop, digests)
        targets = tuple(o.id for o, d in zip(owners, digests, strict=True) if d != reference)
        sources = tuple(v.id for v in held[p] if v.digests.get(p) == reference)
        a.moves.append(Move(p, sources, targets, drop))
    return a


def _reference_digest(p, holders, drop, owner_digests):
    """The digest owners should reach: a foreign holder's, else the commonest non-empty one."""
    for v in holders:
        if v.id in drop:
            return v.digests[p]
    counts = Counter(d for d in owner_digests if d != EMPTY_DIGEST)
    return counts.most_common(1)[0][0] if counts else EMPTY_DIGEST


def record_problems(ring, partition, records_by_node, members, expired_before=0):
    """The record-level differences of one partition.

    ``records_by_node`` is ``{node_id: [Record]}`` for every up node holding
    the partition or owning it; ``members`` the ids in the ring.  Returns a
    set of tuples: ``("lacks", node, name, version, sha256, size)`` for an
    owner without the winning record (or with an older one), and
    ``("foreign", node, name, version, sha256, size)`` for a record a
    non-owner still holds.  An owner without any record of a name whose
    winner is a tombstone older than ``expired_before`` lacks nothing: the
    nodes never copy such a tombstone there (:func:`~filetracker.records.worth_copying`).
    """
    merged = {}
    for recs in records_by_node.values():
        for r in recs:
            merged.setdefault(r.name, []).append(r)
    winners = {name: merge_all(rs) for name, rs in merged.items()}
    owners = [n.id for n in ring.partition_owners(partition)]
    out = set()
    for node, recs in records_by_node.items():
        mine = {r.name: r for r in recs}
        if node in owners and node in members:
            for name, w in winners.items():
                r = mine.get(name)
                if worth_copying(w, r, expired_before):
                    out.add(("lacks", node, name, w.version, w.sha256, w.size))
        else:
            for r in recs:
                out.add(("foreign", node, r.name, r.version, r.sha256, r.size))
    return out
