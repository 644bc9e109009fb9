"""``status``: one line per node, and whether the cluster agrees on its ring.

Exit status 0 only when every node answered (ring members, leaving members
and ``--drain`` nodes) and all the members hold the same ring; 1 otherwise
(the table still shows everything that could be learnt, with down nodes
marked DOWN and the reason).
"""

import json

from cluster.admin import draining
from cluster.admin.analysis import analyze
from filetracker.units import human_bytes

COLUMNS = ("NODE", "STATE", "EPOCH", "OWNED", "FILES", "BYTES", "FREE", "PENDING", "MOVES OUT/IN")


def collect(access, drain=()):
    """``(document, exit_status)``: the JSON-able status of the cluster."""
    ring, _, doc = draining.current(access, None, extra=drain, wait=0)
    leaving = {m["id"] for m in doc["members"]} | {m["url"] for m in doc["members"]}
    drain = list(dict.fromkeys(list(drain) + [m["url"] for m in doc["members"]]))
    views = access.snapshot(ring, extra=drain)
    analysis = analyze(ring, views)
    incoming = {}
    for m in analysis.moves:
        for t in m.targets:
            incoming[t] = incoming.get(t, 0) + 1
    nodes = []
    for v in views:
        s = v.status or {}
        nodes.append({
            "id": v.id, "url": v.url, "member": v.member, "up": v.up, "error": v.error,
            "leaving": not v.member or v.id in leaving or v.url in leaving,
            "draining_listed": v.id in leaving or v.url in leaving,
            "epoch": v.ring.epoch if v.ring is not None else None,
            "ring_agrees": bool(v.ring is not None and v.ring == ring),
            "partitions_owned": len(ring.owned_partitions(v.id)) if v.member else 0,
            "files": s.get("files"), "bytes": s.get("bytes"), "tombstones": s.get("tombstones"),
            "free_bytes": s.get("free_bytes"), "pending_handoff": s.get("pending_handoff"),
            "retired_bytes": s.get("retired_bytes"), "hints_taken": s.get("hints_taken"),
            "moves_out": len(analysis.foreign.get(v.id, ())) if v.up else None,
            "moves_in": incoming.get(v.id, 0) if v.up else None,
        })
    agreed = all(n["ring_agrees"] for n in nodes if n["up"] and n["member"])
    # a leaving (or --drain) node that is down counts too: what it still holds has not reached the owners
    down = analysis.down + [v.id for v in views if not v.member and not v.up and v.id not in analysis.down]
    doc = {"epoch": ring.epoch, "replicas": ring.n_replicas, "partition_power": ring.partition_power,
           "partitions": ring.partitions, "nodes": nodes, "down": down, "ring_agreed": agreed,
           "moves_in_progress": len(analysis.moves), "balanced": analysis.balanced and agreed and not down}
    return doc, 0 if agreed and not down else 1


def _cell(value, fmt=str):
    return "-" if value is None else fmt(value)


def render(doc, out):
    rows = [COLUMNS]
    for n in doc["nodes"]:
        name = n["id"] + " (leaving)" if n.get("leaving") or not n["member"] else n["id"]
        state = "up" if n["up"] else "DOWN"
        epoch = _cell(n["epoch"])
        if n["up"] and not n["ring_agrees"]:
            epoch += "!"
        rows.append((name, state, epoch, str(n["partitions_owned"]), _cell(n["files"]),
                     _cell(n["bytes"], human_bytes), _cell(n["free_bytes"], human_bytes),
                     _cell(n["pending_handoff"]),
                     "-" if n["moves_out"] is None else "%d/%d" % (n["moves_out"], n["moves_in"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    out.write("ring epoch %d, N=%d, %d partitions: %s; %s; %s\n" % (
        doc["epoch"], doc["replicas"], doc["partitions"],
        "ring agreed" if doc["ring_agreed"] else "RING NOT AGREED (marked !)",
        "all nodes up" if not doc["down"] else "DOWN: " + ", ".join(doc["down"]),
        "balanced" if doc["balanced"] else
        "%d partitions to move or repair among the nodes up" % doc["moves_in_progress"] if doc["down"] else
        "%d partitions to move or repair" % doc["moves_in_progress"]))
    for n in doc["nodes"]:
        if not n["up"]:
            out.write("%s: %s\n" % (n["id"], n["error"]))
            if n.get("draining_listed") and not n["member"]:
                out.write("  (leaving: bring it back to finish its drain, or run `filetracker-admin remove-node %s` "
                          "again to stop waiting for it)\n" % n["url"])


def status(access, out, drain=(), as_json=False):
    doc, code = collect(access, drain)
    if as_json:
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        render(doc, out)
    return code
