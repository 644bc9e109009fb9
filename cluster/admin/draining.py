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
document carrying ``"change": {"what", "epoch"}`` (the ring epoch it is about to
write), installed on a coordinator first, the reachable member of the current
ring with the lowest id, and only then on the others (:func:`claim`).  Two
commands started together read the same version, so the coordinator refuses
the second (an equal version with other contents) before it writes anything;
a command started after another's claim reads it and takes a higher epoch, so
no two different rings ever share an epoch (each epoch is claimed once), and the
highest epoch, which every node adopts, is one command's ring.  Before this, two
``remove-node`` at once wrote two different rings of one epoch, half the nodes
each, which no command could mend.
"""

import msgpack

from cluster.admin.access import AdminError, describe_error
from cluster.peers import PeerError, unpack

PATH = "/_cluster/draining"
EMPTY = {"version": 0, "members": []}
#: what :func:`write` says of a node that holds a newer (or another) document of that version
REFUSED = "refused: it holds a newer list"


def _get(access, url):
    try:
        return unpack(access.client.request("GET", url, PATH).content)
    except PeerError as e:
        if e.status == 404:   # a node without the endpoint knows no leaving member
            return dict(EMPTY)
        raise


def read(access, urls):
    """``(newest document, {url: document or exception})`` from ``urls`` (unreachable ones are skipped)."""
    docs = {}
    newest = dict(EMPTY)
    for url, doc, err in access.map(lambda u: _get(access, u), list(dict.fromkeys(urls))):
        docs[url] = doc if err is None else err
        if err is None and isinstance(doc, dict) and doc.get("version", 0) > newest["version"]:
            newest = doc
    return newest, docs


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


def next_epoch(doc, *rings):
    """The epoch for a new ring: above every ring given and every epoch claimed before."""
    return max([claimed_epoch(doc)] + [r.epoch for r in rings]) + 1


def claim(access, out, doc, ring, what, epoch, add=(), remove=(), also=()):
    """Claim the membership change ``what`` (ring ``epoch``; ``add``/``remove`` leaving members)
    with a new version of ``doc``: on the coordinator first (the reachable member of ``ring``
    with the lowest id), then on the other members and ``also``.  Returns the new document.

    Raises :class:`AdminError`, with nothing written, when the coordinator refuses (another
    change claimed this version first) or no member answers."""
    new = changed(doc, add=add, remove=remove, change={"what": what, "epoch": epoch})
    order = [n.url for n in sorted(ring.nodes, key=lambda n: n.id)]
    reasons = []
    for first in order:
        err = write(access, new, [first])[first]
        if err is None:
            break
        if err == REFUSED:
            raise AdminError("another membership change got there first (%s holds a newer list of leaving nodes "
                             "than this command read): nothing changed; see `filetracker-admin status`, then run "
                             "this again" % first)
        reasons.append("%s: %s" % (first, err))
    else:
        raise AdminError("no member of ring epoch %d took the change (%s): nothing changed"
                         % (ring.epoch, "; ".join(reasons)))
    for url, err in write(access, new, [u for u in order + list(also) if u != first]).items():
        if err:
            out.write("warning: %s did not record the change: %s\n" % (url, err))
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
        doc = claim(access, out, doc, ring, "finish the removal of %s" % names, new.epoch)
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
    results = write(access, new, urls)
    if all(results.values()):
        out.write("warning: could not record that %s left: %s\n" % (", ".join(done), "; ".join(
            "%s: %s" % kv for kv in results.items())))
        return doc
    out.write("%s drained: no longer listed as leaving\n" % ", ".join(done))
    return new
