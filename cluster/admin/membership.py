"""``add-node`` and ``remove-node``: write a new ring (epoch + 1) to every node.

A ring change moves no data by itself: the nodes notice which partitions they
no longer own (handoff) or newly own (anti-entropy) and move them, driven by
``rebalance``.  A removed node is given the new ring too: it is then outside
the ring but still reachable, so its handoff pushes everything it holds to the
new owners; it has left for good once it holds nothing (``remove-node`` waits
for that unless ``--no-wait``).

Before the ring changes, the member is recorded as *leaving* on every node
(:mod:`cluster.admin.draining`), so an interrupted removal is finished by a
plain ``filetracker-admin rebalance`` or ``remove-node URL`` again; ``--drain URL``
is no longer needed (still accepted).

Ring writes go to the members first and to the node that leaves last, so that
no node starts handing data to owners that do not know yet that they own it.

``remove-node`` refuses (exit status 2, nothing written) a removal that leaves
fewer nodes than the ring's N: each file would keep fewer copies.
``--allow-fewer-replicas`` removes it anyway, with a warning.
"""

import sys

from cluster.admin import draining
from cluster.admin.access import AdminError, describe_error
from cluster.admin.rebalance import rebalance
from cluster.peers import PeerError
from cluster.ring import Node, Ring, RingError, moved_fraction


def conflicting(ring, rings):
    """URLs holding a different ring with the same epoch as ``ring`` (a split brain)."""
    return sorted(u for u, r in rings.items()
                  if isinstance(r, Ring) and r.epoch == ring.epoch and not r.same_layout(ring))


def _require_agreed(ring, rings):
    bad = conflicting(ring, rings)
    if bad:
        raise AdminError("the ring is not agreed: %s hold a different ring with epoch %d; fix that first"
                         % (", ".join(bad), ring.epoch))


def _write(access, out, ring, urls):
    """Install ``ring`` on ``urls`` in that order of groups; returns ``{url: error}`` of those that
    did not take it."""
    failed = {}
    for group in urls:
        for url, err in access.put_ring(ring, group).items():
            if err:
                failed[url] = err
                out.write("warning: %s did not take ring epoch %d: %s\n" % (url, ring.epoch, err))
    return failed


def _superseded(out, failed):
    """True (and says so) when a node refused the ring: a later membership change wrote a newer one."""
    refused = sorted(u for u, err in failed.items() if err.startswith("refused"))
    if refused:
        out.write("another membership change replaced this one (%s hold a newer ring, or another ring of this "
                  "epoch): see `filetracker-admin status`\n" % ", ".join(refused))
    return bool(refused)


def _require_same_secret_rule(access, url, members):
    """AdminError unless the new node at ``url`` guards its internal API as the members do.

    A node without the secret in a cluster that has one would serve the internal
    API (writes, deletes, rings) to anyone, and the members would refuse what it
    sends them; the other way round, it would refuse the members.  The admin's own
    secret cannot tell: a node without one accepts any.
    """
    for member in members:
        try:
            members_need = access.requires_secret(member)
            new_needs = access.requires_secret(url)
        except PeerError:
            continue   # this member cannot tell: ask the next one
        if members_need and not new_needs:
            raise AdminError("%s runs without a cluster secret, but the cluster has one: its internal API would "
                             "be open to anyone and the members would refuse what it sends them; restart it with "
                             "--cluster-secret-file" % url)
        if new_needs and not members_need:
            raise AdminError("%s has a cluster secret, but the members run without one: it would refuse what "
                             "they send it; start every node with the same --cluster-secret-file, or none" % url)
        return


def _require_no_other_cluster(url, node_id, status, its_ring, ring, returning):
    """AdminError when the node at ``url`` belongs to another cluster or holds files of its own.

    A node whose ring names other members, none of them ours, is a member of another
    cluster: once added, its peers adopt our ring from it (a newer epoch) and hand
    everything they hold to our nodes, where last-writer-wins merges it into our files.
    A node alone in its ring that holds files would merge them the same way.  A node
    this cluster removed before (``returning``) or that knows our members is ours."""
    others = [n.id for n in its_ring.nodes if n.id != node_id and n.url != url]
    if others and not any(ring.node(i) is not None for i in others) and not returning:
        raise AdminError("%s is a member of another cluster (its ring epoch %d names %s, none of them ours): "
                         "adding it would pull that cluster's nodes and files into this one; give this cluster "
                         "an empty node (to merge files, use `filetracker-admin import`)"
                         % (url, its_ring.epoch, ", ".join(sorted(others))))
    held = int(status.get("files", 0)) + int(status.get("tombstones", 0))
    if not others and held and not returning:
        raise AdminError("%s holds %d files and tombstones of its own: added, they would merge into this "
                         "cluster's files (the newer version of a name wins); give this cluster an empty node "
                         "(to merge files, use `filetracker-admin import`)" % (url, held))


def add_node(access, out, url, weight=1, settle=draining.SETTLE_SECONDS):
    """Add the running node at ``url``; returns the exit status.  ``settle``: how long to wait
    for the ring of another membership change claimed but not written yet."""
    url = url.rstrip("/")
    ring, rings, doc = draining.current(access, out, wait=settle)
    _require_agreed(ring, rings)
    try:
        status = access.client.status(url)
        its_ring = access.client.get_ring(url)
    except PeerError as e:
        raise AdminError("cannot reach the new node %s: %s" % (url, describe_error(e))) from None
    node_id = status.get("id") or url
    _require_same_secret_rule(access, url, [n.url for n in ring.nodes if isinstance(rings.get(n.url), Ring)])
    if ring.node(node_id) is not None or any(n.url == url for n in ring.nodes):
        raise AdminError("%s is already a member of ring epoch %d" % (url, ring.epoch))
    gone = draining.find(doc, node_id) or draining.find(doc, url)
    _require_no_other_cluster(url, node_id, status, its_ring, ring, returning=gone is not None)
    if its_ring.partition_power != ring.partition_power:
        raise AdminError("%s was started with partition power %d, the cluster uses %d"
                         % (url, its_ring.partition_power, ring.partition_power))
    try:
        new = Ring(list(ring.nodes) + [Node(node_id, url, int(weight))],
                   epoch=draining.next_epoch(doc, ring, its_ring),
                   replicas=ring.replicas, partition_power=ring.partition_power)
    except RingError as e:
        raise AdminError(str(e)) from None
    # the claim (coordinator first) before any ring is written; a node removed before and
    # coming back leaves the leaving list with it, so a resumed drain does not remove it again
    draining.claim(access, out, doc, ring, "add-node %s" % node_id, new.epoch,
                   remove=[gone["id"]] if gone is not None else (), also=[url], nodes=[n.url for n in new.nodes])
    failed = _write(access, out, new, [[url], [n.url for n in ring.nodes]])
    if _superseded(out, failed):
        return 1
    out.write("ring epoch %d: added %s (weight %d); %d nodes, N=%d\n"
              % (new.epoch, node_id, weight, len(new.nodes), new.n_replicas))
    out.write("fraction of replica copies that move: %.4f (ideal for equal weights %.4f)\n"
              % (moved_fraction(ring, new), 1.0 / len(new.nodes)))
    out.write("run `filetracker-admin rebalance` to move the data now\n")
    return 1 if failed else 0


def _member_known_as(access, ring, url):
    """The member that answers at ``url`` under another spelling (``localhost`` for ``127.0.0.1``),
    by the id its status gives (as ``add-node`` finds it); None when it does not answer or is none."""
    try:
        node_id = access.client.status(url).get("id")
    except (PeerError, ValueError, AttributeError):
        return None
    return ring.node(node_id) if node_id else None


def _copies(n):
    return "1 copy" if n == 1 else "%d copies" % n


def remove_node(access, out, url, wait=True, timeout=0.0, down_timeout=60.0, tty=None,
                allow_fewer_replicas=False, err=None, settle=draining.SETTLE_SECONDS):
    """Remove the member at ``url`` (or with that id) and drain it; returns the exit status.

    Refused (exit status 2, one line on ``err``, nothing changed) when fewer
    nodes than the ring's N would be left, so that each file would keep fewer
    copies, unless ``allow_fewer_replicas`` (``--allow-fewer-replicas``).  ``settle``:
    see :func:`add_node`."""
    url = url.rstrip("/")
    ring, rings, doc = draining.current(access, out, wait=settle)
    _require_agreed(ring, rings)
    node = ring.node(url) or next((n for n in ring.nodes if n.url == url), None) or _member_known_as(access, ring, url)
    entry = draining.find(doc, url) if node is None else None
    if entry is not None:
        try:
            access.client.status(entry["url"])
        except PeerError as e:
            # gone for good: stop waiting for it (the owners rebuild its partitions from the other replicas)
            if draining.commit(access, out, draining.changed(doc, remove=[entry["id"]]), ring):
                raise AdminError("another membership change got there first: nothing changed; see "
                                 "`filetracker-admin status`, then run this again") from None
            out.write("%s is leaving and unreachable (%s): no longer listed as leaving; its data is rebuilt "
                      "from the other replicas by `filetracker-admin rebalance`\n" % (entry["id"], describe_error(e)))
            return 0
        out.write("%s is already leaving (ring epoch %d): resuming its drain\n" % (url, ring.epoch))
        if not wait:
            return 0
        return rebalance(access, out, timeout=timeout, down_timeout=down_timeout, tty=tty,
                         allow_fewer_replicas=allow_fewer_replicas, settle=settle)
    if node is None:
        raise AdminError("%s is not a member of ring epoch %d (members: %s)"
                         % (url, ring.epoch, ", ".join(n.id for n in ring.nodes)))
    if len(ring.nodes) == 1:
        raise AdminError("cannot remove the last node of the cluster")
    new = ring.with_changes(remove=[node.id], epoch=draining.next_epoch(doc, ring))
    # members already leaving (another removal under way) are gone as well once drained
    others_leaving = sorted(m["id"] for m in doc["members"] if m["id"] != node.id and new.node(m["id"]))
    staying = len(new.nodes) - len(others_leaving)
    if staying < ring.replicas:
        also = " (%s leaving already)" % ", ".join(others_leaving) if others_leaving else ""
        if not allow_fewer_replicas:
            (err or sys.stderr).write(
                "filetracker-admin: refusing to remove %s: %d nodes would be left%s for N=%d, so the cluster "
                "would keep only %s of each file; add a node first (`filetracker-admin add-node URL`), or pass "
                "--allow-fewer-replicas to remove it anyway\n"
                % (node.id, staying, also, ring.replicas, _copies(min(staying, ring.replicas))))
            return 2
        out.write("warning: %d nodes left%s for N=%d: the cluster keeps only %s of each file "
                  "(--allow-fewer-replicas)\n" % (staying, also, ring.replicas, _copies(min(staying, ring.replicas))))
    # first the claim, which lists the node as leaving: a re-run then knows what was going on
    draining.claim(access, out, doc, ring, "remove-node %s" % node.id, new.epoch, add=[node],
                   nodes=[n.url for n in ring.nodes])
    failed = _write(access, out, new, [[n.url for n in new.nodes]])
    leaving = _write(access, out, new, [[node.url]])
    if _superseded(out, {**failed, **leaving}):
        return 1
    out.write("ring epoch %d: removed %s; %d nodes, N=%d; fraction of replica copies that move: %.4f\n"
              % (new.epoch, node.id, len(new.nodes), new.n_replicas, moved_fraction(ring, new)))
    if leaving:
        out.write("%s is unreachable: its data is rebuilt from the other replicas (if it comes back it "
                  "learns the new ring from its peers and hands off what it holds)\n" % node.id)
    if not wait:
        out.write("draining %s in the background; watch it with `filetracker-admin rebalance`\n" % node.id)
        return 1 if failed else 0
    status = rebalance(access, out, drain=[] if leaving else [node.url], timeout=timeout,
                       down_timeout=down_timeout, tty=tty, allow_fewer_replicas=allow_fewer_replicas,
                       settle=settle)
    return 1 if failed else status
