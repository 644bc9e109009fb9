"""The leaving members, persisted by the nodes, so an interrupted ``remove-node`` resumes by itself.

``remove-node URL`` first records its intent on every node
(``PUT /_cluster/draining``: a last-writer-wins document ``{"version",
"members": [{"id", "url"}]}``, kept in each node's ``draining.msgpack``), and
only then writes the ring without that member.  Whatever is killed or
restarted afterwards (the admin half-way, a node), a plain re-run of
``filetracker-admin rebalance`` (or ``remove-node URL`` again):

1. reads the document with the highest version from the nodes and gives it to
   the nodes holding an older one;
2. finishes a removal whose ring was never written (the member is still in
   the ring: a new ring without it, epoch + 1, members first, the leaving node
   last) - see :func:`resume`;
3. gives the current ring to leaving nodes that lag behind it (they are
   outside the ring, so the ordinary ring spreading skips them), so their
   handoff pushes what they hold to the owners;
4. watches them drain like ``--drain URL`` did, and once a leaving node is up
   and holds nothing, drops it from the document (:func:`forget_drained`).

``status`` shows leaving members with ``(leaving)`` without any option.

The document also serialises membership changes (``add-node``, ``remove-node``
and a resumed removal): each first *claims* its change with a new version of the
document carrying ``"change": {"what", "epoch", "nodes"}`` (the ring epoch it is
about to write and the URLs it writes that ring to), installed on a coordinator
first, the reachable member of the current ring with the lowest id, then on the
other members (:func:`claim`).  A node keeps one document per version, so of two
commands that read the same version only one claim is taken:

* both reach the coordinator: it refuses the second before anything is written;
* they reached different coordinators (the lowest one was down for the first
  and back for the second): a member refuses the second claim, which then fails
  without writing a ring and *withdraws* itself (the winner's list is written
  one version up over the nodes that took the loser's), see :func:`commit`.

A command that reads a claim whose ring it has not seen (the claimed epoch is
above the ring it found: the other command is between its claim and its ring
writes, or was interrupted there) looks for that ring on the nodes the claim
names, waits up to ``SETTLE_SECONDS`` for it (:func:`current`) and plans on it,
so it cannot write a ring without the other change's node; a ring that never
shows up is taken for an interrupted change and the next epoch is taken above it
(``rebalance`` re-issues the ring unchanged above it, :func:`retire`, so that later
commands stop waiting for it).
So no two different rings share an epoch (each epoch is claimed once), and the
highest epoch, which every node adopts, is one command's ring that includes every
earlier change.  Before this, two ``remove-node`` at once wrote two different
rings of one epoch, half the nodes each, which no command could mend.

What the claim cannot order is two commands each reaching only its own part of
a split network: both are warned that fewer than half of the members took the
claim (``remove-node`` of dead nodes needs that), see ``docs/ARCHITECTURE.md``.
"""

import time

import msgpack

from cluster.admin.access import AdminError, describe_error
from cluster.peers import PeerError, unpack

PATH = "/_cluster/draining"
EMPTY = {"version": 0, "members": []}
#: what :func:`write` says of a node that holds a newer (or another) document of that version
REFUSED = "refused: it holds a newer list"
#: How long a membership change waits for the ring of another change claimed before it
#: (between its claim and its ring writes: a few round trips, more with a member timing out).
SETTLE_SECONDS = 15.0


def _get(access, url):
    try:
        return unpack(access.client.request("GET", url, PATH).content)
    except PeerError as e:
        if e.status == 404:   # a node without the endpoint knows no leaving member
            return dict(EMPTY)
        raise


def newest(docs):
    """The document of the highest version among ``docs`` (a list); of different documents of
    that version (a claim that lost, not yet withdrawn), the one most nodes hold, then the
    lowest in encoded order, so that every reader picks the same one."""
    docs = [d for d in docs if isinstance(d, dict)]
    top = max([d.get("version", 0) for d in docs], default=0)
    if not top:
        return dict(EMPTY)
    counts = {}
    for d in docs:
        if d.get("version", 0) == top:
            key = msgpack.packb(d)
            counts[key] = counts.get(key, 0) + 1
    best = min(counts, key=lambda k: (-counts[k], k))
    return msgpack.unpackb(best, raw=False)


def read(access, urls):
    """``(newest document, {url: document or exception})`` from ``urls`` (unreachable ones are skipped)."""
    docs = {}
    for url, doc, err in access.map(lambda u: _get(access, u), list(dict.fromkeys(urls))):
        docs[url] = doc if err is None else err
    return newest(list(docs.values())), docs


def write(access, doc, urls):
    """Install ``doc`` on each URL: ``{url: None (installed or already there) or error text}``."""
    body = msgpack.packb(doc)

    def put(url):
        resp = access.client.request("PUT", url, PATH, ok=(200, 409), data=body,
                                     headers={"Content-Type": "application/msgpack"})
        return resp.status_code == 200

    out = {}
    for url, ok, err in access.map(put, list(dict.fromkeys(urls))):
        out[url] = describe_error(err) if err is not None else (None if ok else REFUSED)
    return out


def changed(doc, add=(), remove=(), change=None):
    """A new document (version + 1) with members ``add`` (ring Nodes) added and ids ``remove`` removed,
    keeping the last claimed ``change`` unless a new one is given."""
    members = {m["id"]: m for m in doc["members"] if m["id"] not in set(remove)}
    for node in add:
        members[node.id] = {"id": node.id, "url": node.url}
    new = {"version": doc["version"] + 1, "members": [members[k] for k in sorted(members)]}
    if change is not None or doc.get("change") is not None:
        new["change"] = change if change is not None else doc["change"]
    return new


def claimed_epoch(doc):
    """The ring epoch the last claimed membership change took (0: none)."""
    return (doc.get("change") or {}).get("epoch", 0)


def claimed_nodes(doc):
    """The URLs the last claimed membership change writes its ring to (its new node among them)."""
    return list((doc.get("change") or {}).get("nodes", ()))


def pending_claim(doc, ring):
    """True when ``doc`` claims a ring epoch above ``ring``'s: that change has not written its
    ring where ``ring`` was read (it is between its claim and its ring writes, or was interrupted)."""
    return claimed_epoch(doc) > ring.epoch


def current(access, out, extra=(), wait=SETTLE_SECONDS, poll=0.2):
    """``(ring, {url: Ring or exception}, document)``: the newest ring (``access.discover``, with
    ``extra`` URLs) and then the newest leaving-members document of its members.

    When the document claims a ring epoch above that ring, the ring is looked for on the nodes
    the claim names (an ``add-node`` writes to its new node first) and waited for up to ``wait``
    seconds; a claim whose ring never shows up is reported on ``out`` and taken for interrupted
    (:func:`next_epoch` still goes above it)."""
    deadline = time.monotonic() + wait
    extra = [u.rstrip("/") for u in extra]
    while True:
        ring, rings = access.discover(extra=extra)
        doc, _ = read(access, [n.url for n in ring.nodes] + extra)
        if not pending_claim(doc, ring):
            return ring, rings, doc
        named = [u for u in claimed_nodes(doc) if u not in rings]
        if named:
            extra = list(dict.fromkeys(extra + named))
            continue   # its ring may be on a node outside ours (the node being added)
        if time.monotonic() >= deadline:
            if out is not None:
                out.write("warning: %s claimed ring epoch %d, which no reachable node holds: taken for "
                          "interrupted\n" % (doc["change"]["what"], claimed_epoch(doc)))
            return ring, rings, doc
        time.sleep(poll)


def next_epoch(doc, *rings):
    """The epoch for a new ring: above every ring given and every epoch claimed before."""
    return max([claimed_epoch(doc)] + [r.epoch for r in rings]) + 1


def claim(access, out, doc, ring, what, epoch, add=(), remove=(), also=(), nodes=()):
    """Claim the membership change ``what`` (ring ``epoch``, written to ``nodes``; ``add``/``remove``
    leaving members) with a new version of ``doc`` on the members of ``ring`` and on ``also``
    (see :func:`commit`).  Returns the new document.

    Raises :class:`AdminError`, with no ring written, when another change claimed this version
    first or no member answers."""
    change = {"what": what, "epoch": epoch}
    if nodes:
        change["nodes"] = sorted(dict.fromkeys(u.rstrip("/") for u in nodes))
    new = changed(doc, add=add, remove=remove, change=change)
    refused = commit(access, out, new, ring, also=also)
    if refused:
        raise AdminError("another membership change got there first (%s hold%s a newer list of leaving nodes "
                         "than this command read): nothing changed; see `filetracker-admin status`, then run "
                         "this again" % (", ".join(refused), "s" if len(refused) == 1 else ""))
    return new


def commit(access, out, new, ring, also=()):
    """Install the document ``new`` (one version above the one read) on the members of ``ring``,
    the coordinator first (the reachable member with the lowest id), then the others and ``also``.

    Returns the members that refused it (they hold another document of that version or a newer
    one: another command's), ``[]`` when taken.  Refused by the coordinator, it is written
    nowhere; refused by another member, it is withdrawn: the document that member holds is written
    one version up on every member, so that readers do not take this one for the winner.
    :class:`AdminError` when no member answers."""
    order = [n.url for n in sorted(ring.nodes, key=lambda n: n.id)]
    reasons = []
    for first in order:
        err = write(access, new, [first])[first]
        if err is None:
            break
        if err == REFUSED:
            return [first]
        reasons.append("%s: %s" % (first, err))
    else:
        raise AdminError("no member of ring epoch %d took the change (%s): nothing changed"
                         % (ring.epoch, "; ".join(reasons)))
    results = write(access, new, [u for u in order if u != first])
    refused = sorted(u for u, err in results.items() if err == REFUSED)
    if refused:
        _withdraw(access, new, refused, order)
        return refused
    took = 1 + sum(1 for err in results.values() if err is None)
    if 2 * took <= len(order):
        out.write("warning: only %d of %d members took the change: a change made at the same time where only "
                  "the others are reachable could take the same ring epoch\n" % (took, len(order)))
    for url, err in list(results.items()) + list(write(access, new, [u for u in also if u not in order]).items()):
        if err:
            out.write("warning: %s did not record the change: %s\n" % (url, err))
    return []


def _withdraw(access, lost, refused, urls):
    """Write the winner of ``lost``'s version (what ``refused`` hold) one version up on ``urls``
    (best effort: a node that took another document meanwhile keeps it)."""
    won, _ = read(access, refused)
    if won["version"] != lost["version"]:
        return   # they hold a newer one, which readers take anyway
    write(access, dict(won, version=won["version"] + 1), urls)


def retire(access, out, ring, doc):
    """Re-issue ``ring`` unchanged above the epoch an interrupted change claimed (``doc``) and never
    wrote, so that later commands stop waiting for it; returns the ring now current."""
    new = ring.with_changes(epoch=next_epoch(doc, ring))
    what = doc["change"]["what"]
    claim(access, out, doc, ring, "re-issue the ring after the interrupted %s" % what, new.epoch,
          nodes=[n.url for n in ring.nodes])
    failed = sorted(u for u, err in access.put_ring(new, [n.url for n in ring.nodes]).items() if err)
    out.write("ring epoch %d re-issued unchanged as epoch %d, above the interrupted %s%s\n"
              % (ring.epoch, new.epoch, what, " (not taken by %s)" % ", ".join(failed) if failed else ""))
    return new


def find(doc, url_or_id):
    key = url_or_id.rstrip("/")
    return next((m for m in doc["members"] if m["id"] == key or m["url"] == key), None)


def spread(access, doc, docs):
    """Give ``doc`` to every reachable node holding an older version; returns their URLs."""
    lagging = [u for u, d in docs.items() if isinstance(d, dict) and d.get("version", 0) < doc["version"]]
    if lagging and doc["version"]:
        write(access, doc, lagging)
    return lagging


def resume(access, out, ring, rings, extra=(), apply=True, allow_fewer_replicas=False):
    """Steps 1-3 of the module docstring; returns ``(ring, leaving URLs, document)``.

    ``ring``/``rings`` come from ``access.discover``.  The returned ring is the
    one to judge (a new one when an interrupted removal was finished here).
    ``apply=False`` (a dry run) changes nothing: the ring that finishing the
    removal would write is returned but not written.
    """
    doc, docs = read(access, [n.url for n in ring.nodes] + [u.rstrip("/") for u in extra])
    if not doc["members"]:
        return ring, [], doc
    more, more_docs = read(access, [m["url"] for m in doc["members"] if m["url"] not in docs])
    docs.update(more_docs)
    if more["version"] > doc["version"]:
        doc = more
    if apply:
        spread(access, doc, docs)
    still = [ring.node(m["id"]) for m in doc["members"] if ring.node(m["id"]) is not None]
    if still:
        if len(still) >= len(ring.nodes):
            raise AdminError("every member is marked leaving; add nodes first")
        names = ", ".join(n.id for n in still)
        new = ring.with_changes(remove=[n.id for n in still], epoch=next_epoch(doc, ring))
        if len(new.nodes) < ring.replicas and not allow_fewer_replicas:
            raise AdminError("finishing the interrupted removal of %s would leave %d nodes for N=%d: add a node "
                             "first (`filetracker-admin add-node URL`), or finish it anyway with "
                             "`filetracker-admin remove-node URL --allow-fewer-replicas`"
                             % (names, len(new.nodes), ring.replicas))
        if not apply:
            out.write("would finish the interrupted removal of %s: ring epoch %d, %d nodes\n"
                      % (names, new.epoch, len(new.nodes)))
            return new, [m["url"] for m in doc["members"]], doc
        doc = claim(access, out, doc, ring, "finish the removal of %s" % names, new.epoch,
                    nodes=[n.url for n in ring.nodes])
        failed = [u for g in ([n.url for n in new.nodes], [n.url for n in still])
                  for u, err in access.put_ring(new, g).items() if err]
        out.write("finished the interrupted removal of %s: ring epoch %d, %d nodes%s\n"
                  % (", ".join(n.id for n in still), new.epoch, len(new.nodes),
                     (" (not taken by %s)" % ", ".join(failed)) if failed else ""))
        ring = new
    leaving = [m["url"] for m in doc["members"]]
    if apply:
        give_ring(access, out, ring, leaving)
    return ring, leaving, doc


def give_ring(access, out, ring, urls):
    """Install ``ring`` on the (leaving) nodes ``urls`` that hold an older one; returns their URLs."""
    lagging = []
    for url, theirs, err in access.map(access.client.get_ring, urls):
        if err is None and theirs.epoch < ring.epoch:
            lagging.append(url)
    if lagging:
        for url, err in access.put_ring(ring, lagging).items():
            if err:
                out.write("warning: leaving node %s did not take ring epoch %d: %s\n" % (url, ring.epoch, err))
        out.write("gave ring epoch %d to leaving %s\n" % (ring.epoch, ", ".join(lagging)))
    return lagging


def forget_drained(access, out, ring, views):
    """Drop from the leaving members those that are up, outside ``ring`` and hold nothing."""
    urls = [n.url for n in ring.nodes] + [v.url for v in views if not v.member]
    doc, _ = read(access, urls)
    done = [m["id"] for m in doc["members"]
            if ring.node(m["id"]) is None and any(
                v.up and not v.member and not v.digests and (v.id == m["id"] or v.url == m["url"]) for v in views)]
    if not done:
        return doc
    new = changed(doc, remove=done)
    try:
        refused = commit(access, out, new, ring, also=[v.url for v in views if not v.member])
        why = "%s took another change meanwhile; run `filetracker-admin rebalance` again" % ", ".join(refused)
    except AdminError as e:
        refused, why = True, str(e)
    if refused:
        out.write("warning: could not record that %s left: %s\n" % (", ".join(done), why))
        return doc
    out.write("%s drained: no longer listed as leaving\n" % ", ".join(done))
    return new
