"""``verify [--repair]``: every record against its blob, and every replica against the others.

1. *Blobs*: each up node checks its own records against their blobs
   (``POST /_cluster/verify``, the store's ``verify``; with ``--repair`` a
   record whose blob is missing or corrupt is dropped there, so the replicas
   bring it back).  A node without that endpoint is checked from here, by
   hashing each blob it serves (``GET /_cluster/blobs/<sha>``); that cannot repair.
2. *Replicas*: partitions whose owners' digests differ, or that a non-owner
   holds, are compared record by record; every owner lacking the winning
   record, and every record left on a non-owner, is a difference.
   ``--repair`` runs handoff + sync passes on every node (up to three rounds)
   and checks again.

Exit status 0 when every node was checked and nothing is wrong (after repair);
1 otherwise, including when a node is down (it is named, not checked).
"""

import hashlib

from cluster.admin import draining
from cluster.admin.access import PASS_TIMEOUT, PeerError, describe_error
from cluster.admin.analysis import analyze
from cluster.admin.rebalance import drill

SHOW = 20
REPAIR_ROUNDS = 3


def node_blobs(access, view, repair):
    """``{"checked", "missing", "corrupt", "repaired", "how"}`` of one up node."""
    try:
        resp = access.client.request("POST", view.url, "/_cluster/verify", data=b"",
                                     params={"repair": "1" if repair else "0"},
                                     timeout=(access.client.timeout[0], PASS_TIMEOUT))
        doc = resp.json()
        return {"checked": doc.get("checked", 0), "missing": list(doc.get("missing", [])),
                "corrupt": list(doc.get("corrupt", [])), "repaired": doc.get("repaired", 0), "how": "node",
                "integrity": doc.get("integrity")}
    except PeerError as e:
        if e.status not in (404, 405):
            raise
    return _blobs_from_here(access, view)


def _blobs_from_here(access, view):
    out = {"checked": 0, "missing": [], "corrupt": [], "repaired": 0, "how": "admin"}
    for p in sorted(view.digests):
        for r in access.partition_records(view.url, p):
            if r.deleted:
                continue
            out["checked"] += 1
            h = hashlib.sha256()
            try:
                size = access.client.fetch_blob(view.url, r.sha256, h.update)
            except PeerError as e:
                if e.status == 404:
                    out["missing"].append(r.name)
                    continue
                raise
            if size != r.size or h.hexdigest() != r.sha256:
                out["corrupt"].append(r.name)
    return out


def _describe(t):
    kind, node, name, version, sha, _ = t
    if kind == "lacks":
        return "%s: %s lacks version %d (sha256 %s...)" % (name, node, version, sha[:12] or "tombstone")
    return "%s: held by %s, which does not own it (version %d)" % (name, node, version)


def verify(access, out, drain=(), repair=False):
    ring, _ = access.discover(extra=drain)
    # members an interrupted remove-node left behind are checked like --drain URL
    doc, _ = draining.read(access, [n.url for n in ring.nodes] + list(drain))
    members = {n.url for n in ring.nodes}
    drain = list(dict.fromkeys(list(drain) + [m["url"] for m in doc["members"] if m["url"] not in members]))
    views = access.snapshot(ring, extra=drain)
    found = False      # something wrong was found (the verdict: PROBLEMS FOUND)
    unchecked = False  # a node was not checked, down or failing (else: INCOMPLETE)
    for v, result, err in access.map(lambda v: node_blobs(access, v, repair) if v.up else None, views):
        if not v.up:
            out.write("%s: DOWN, not checked (%s)\n" % (v.id, v.error))
            unchecked = True
            continue
        if err is not None:
            out.write("%s: blob check failed: %s\n" % (v.id, describe_error(err)))
            unchecked = True
            continue
        problems = len(result["missing"]) + len(result["corrupt"])
        out.write("%s: %d records checked against their blobs, %d missing, %d corrupt%s\n"
                  % (v.id, result["checked"], len(result["missing"]), len(result["corrupt"]),
                     ", %d repaired" % result["repaired"] if repair else ""))
        bitrot = result.get("integrity")
        if bitrot and (bitrot.get("corrupt") or bitrot.get("pending_repair")):
            out.write("  bitrot since the node started: %d corrupt blobs found on reads or scrubs, %d "
                      "quarantined, %d repaired from replicas, %d repairs pending\n"
                      % (bitrot["corrupt"], bitrot["quarantined"], bitrot["repaired"], bitrot["pending_repair"]))
        for name in (result["missing"] + result["corrupt"])[:SHOW]:
            out.write("  bad blob: %s\n" % name)
        if problems and not (repair and result["repaired"] >= problems):
            found = True
            if repair and result["how"] == "admin":
                out.write("  (this node has no /_cluster/verify: repair it there)\n")
    if repair:
        views = access.snapshot(ring, extra=drain)   # records dropped by the blob repair count now
    analysis = analyze(ring, views)
    problems = drill(access, ring, views, analysis.problem_partitions)
    _report(out, problems, "replica differences")
    rounds = 0
    while repair and problems and rounds < REPAIR_ROUNDS:
        rounds += 1
        access.map(lambda v: access.run_task(v.url, "all") if v.up else None, views)
        views = access.snapshot(ring, extra=drain)
        analysis = analyze(ring, views)
        problems = drill(access, ring, views, analysis.problem_partitions)
        out.write("repair round %d: %d differences left\n" % (rounds, len(problems)))
    if problems:
        found = True
        if repair:
            _report(out, problems, "differences left after repair")
    if analysis.down:
        out.write("incomplete: %s down, its replicas were not compared\n" % ", ".join(analysis.down))
    unchecked = unchecked or bool(analysis.down)
    out.write("verify: %s\n" % ("PROBLEMS FOUND" if found else "INCOMPLETE" if unchecked else "OK"))
    return 1 if found or unchecked else 0


def _report(out, problems, title):
    out.write("%s: %d\n" % (title, len(problems)))
    for t in sorted(problems, key=lambda t: (t[2], t[1]))[:SHOW]:
        out.write("  " + _describe(t) + "\n")
    if len(problems) > SHOW:
        out.write("  ... and %d more\n" % (len(problems) - SHOW))
