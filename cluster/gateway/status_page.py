"""``GET /status`` on the gateway: a plain HTML page for operators (no JavaScript).

It shows the ring the gateway routes by (epoch, partitions, replicas,
quorums), one row per node (up or DOWN, the gateway's own liveness mark
and whether reads ask it last for being slow, ring epoch, partitions owned,
files, data size, free disk, records held for other nodes, partitions that
differed in its last anti-entropy pass) and the moves in progress (nodes
handing data off, nodes on an older ring, members being removed - the nodes'
``/_cluster/draining`` list - and seed nodes that are no longer ring members
and still answer).  A refresh meta tag reloads it every ``REFRESH_SECONDS``.

Each node is asked ``GET /_cluster/status`` (with the cluster secret) with a
short timeout, all at once; a node that does not answer is DOWN.  The result
is cached for ``CACHE_SECONDS`` and computed once for concurrent viewers, so
a page left open in many browsers costs the nodes little.  The page is public,
like ``/version/``: it shows node URLs and sizes, never the secret or the
fallback URL.
"""

import asyncio
import html
import json
import time

import msgpack

from cluster.gateway.view import NoRing
from filetracker.server.base import BaseHandler
from filetracker.units import human_bytes

REFRESH_SECONDS = 5
CACHE_SECONDS = 1.0
#: seconds a node gets to answer its status
STATUS_TIMEOUT = 2.0


class StatusCollector:
    """Builds (and briefly caches) the document the page renders."""

    def __init__(self, services):
        self.services = services
        self._doc = None
        self._at = 0.0
        self._pending = None

    async def get(self):
        if self._doc is not None and time.monotonic() - self._at < CACHE_SECONDS:
            return self._doc
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._collect())
            self._pending.add_done_callback(lambda _f: setattr(self, "_pending", None))
        return await asyncio.shield(self._pending)

    async def _collect(self):
        doc = await self._collect_once()
        # The gateway learns a new ring from the epoch on its requests' answers; a gateway without
        # traffic since a ring change would show the old members (a removed node still "in the
        # ring").  Each node's status carries its epoch: a newer one makes the gateway fetch that ring.
        newest = max((n["status"].get("epoch") for n in doc["nodes"]
                      if n["up"] and isinstance(n["status"].get("epoch"), int)), default=None)
        if doc["ring"] is not None and newest is not None and newest > doc["ring"]["epoch"]:
            url = next(n["url"] for n in doc["nodes"] if n["up"] and n["status"].get("epoch") == newest)
            await self.services.view.refresh(prefer=url)
            doc = await self._collect_once()
        self._doc, self._at = doc, time.monotonic()
        return doc

    async def _collect_once(self):
        view = self.services.view
        config = self.services.config
        try:
            ring = await view.get_ring()
        except NoRing:
            ring = None
        members = [(n.id, n.url) for n in view.all_nodes()]
        member_urls = {url for _, url in members}
        timeout = min(STATUS_TIMEOUT, config.timeout)
        leaving = await self._leaving(members, timeout)
        others = [(u, u) for u in dict.fromkeys(u.rstrip("/") for u in config.nodes) if u not in member_urls]
        others += [(m["id"], m["url"]) for m in leaving
                   if m["url"] not in member_urls and m["url"] not in {u for _, u in others}]
        leaving_ids = {m["id"] for m in leaving} | {m["url"] for m in leaving}
        replies = await asyncio.gather(*(
            self.services.client.request(url, "GET", "/_cluster/status", timeout=timeout, observe=False)
            for _, url in members + others))
        nodes = []
        for (node_id, url), reply, member in zip(members + others, replies,
                                                  [True] * len(members) + [False] * len(others), strict=True):
            entry = {"id": node_id, "url": url, "member": member, "routed": member and view.is_live(url),
                     # answers much slower than the others': reads ask it last (latency.py)
                     "slow": url in view.latency.slow, "fetch_ms": _ms(view.latency.mean(url)),
                     "leaving": node_id in leaving_ids or url in leaving_ids,
                     "up": False, "error": None, "status": {}}
            if reply.code == 200:
                try:
                    entry["status"] = json.loads(reply.body)
                    entry["up"] = True
                except ValueError:
                    entry["error"] = "unreadable status"
            else:
                entry["error"] = reply.reason()
            nodes.append(entry)
        doc = {"time": time.time(), "ring": None, "nodes": nodes,
               "write_quorum": config.write_quorum, "read_quorum": config.read_quorum,
               "migration": bool(config.fallback_url),
               # partitions nodes hold without owning them, at the gateway's last poll (holders.py)
               "foreign": view.holders.snapshot(),
               # each node's mean time to answer fetch batches, and whether reads ask it last (latency.py)
               "latency": view.latency.snapshot()}
        if ring is not None:
            doc["ring"] = {"epoch": int(ring.epoch), "partitions": int(ring.partitions),
                           "partition_power": int(ring.partition_power), "replicas": int(ring.n_replicas)}
        doc["moves"] = _moves(doc)
        return doc

    async def _leaving(self, members, timeout):
        """Members being removed: the newest ``GET /_cluster/draining`` list among the ring's nodes
        (``filetracker-admin remove-node`` writes it before the ring without them)."""
        replies = await asyncio.gather(*(
            self.services.client.request(url, "GET", "/_cluster/draining", timeout=timeout, observe=False)
            for _, url in members))
        best = {"version": -1, "members": []}
        for reply in replies:
            if reply.code != 200:
                continue
            try:
                doc = msgpack.unpackb(reply.body, raw=False, strict_map_key=False)
                if doc["version"] > best["version"]:
                    best = {"version": int(doc["version"]),
                            "members": [{"id": str(m["id"]), "url": str(m["url"]).rstrip("/")}
                                        for m in doc["members"]]}
            except (ValueError, KeyError, TypeError, msgpack.UnpackException):
                continue
        return best["members"]


def _moves(doc):
    """Human-readable lines about data in motion."""
    lines = []
    epoch = doc["ring"]["epoch"] if doc["ring"] else None
    for n in doc["nodes"]:
        s = n["status"]
        if not n["up"]:
            continue
        if n["leaving"]:
            lines.append("%s is leaving the cluster (%s): %s files still to hand off"
                         % (n["url"], "still in the ring" if n["member"] else "no longer in the ring",
                            s.get("files", "?")))
            continue
        if not n["member"]:
            # a seed (--nodes) outside the ring and no longer on the nodes' leaving list: it has left
            # (remove-node finished) - unless it still holds records, which its handoff pushes out
            if s.get("files") or s.get("pending_handoff"):
                lines.append("%s is not in the ring: it holds %s files, %s records still to hand off"
                             % (n["url"], s.get("files", 0), s.get("pending_handoff", 0)))
            continue
        if epoch is not None and s.get("epoch") not in (None, epoch):
            lines.append("%s is on ring epoch %s, the gateway on %s (ring change propagating)"
                         % (n["url"], s.get("epoch"), epoch))
        if s.get("pending_handoff"):
            lines.append("%s holds %d records for other nodes (handoff or rebalance in progress)"
                         % (n["url"], s["pending_handoff"]))
        differing = _sync(s).get("differing")
        if differing:
            lines.append("%s: %d partition replicas differed in its last anti-entropy pass (repairing)"
                         % (n["url"], differing))
    return lines


def _sync(status):
    last = ((status.get("tasks") or {}).get("sync") or {}).get("last")
    return last if isinstance(last, dict) else {}


def _cell(value):
    return "-" if value is None else html.escape(str(value))


def render(doc):
    """The HTML page of a status document."""
    e = html.escape
    ring = doc["ring"]
    down = [n for n in doc["nodes"] if n["member"] and not n["up"]]
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="refresh" content="%d">' % REFRESH_SECONDS,
           '<title>filetracker cluster status</title>',
           '<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}'
           'td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}td:first-child,th:first-child'
           '{text-align:left}tr.down td{background:#fdd}tr.up td.state{color:#070;font-weight:bold}'
           'tr.down td.state{color:#b00;font-weight:bold}.summary{font-size:1.1em}</style>',
           '</head><body>', '<h1>filetracker cluster</h1>']
    if ring is None:
        out.append('<p class="summary" id="summary">No ring: no node answered. The cluster is unreachable.</p>')
    else:
        out.append('<p class="summary" id="summary">%s</p>' % e(
            "%d of %d nodes up" % (sum(1 for n in doc["nodes"] if n["member"] and n["up"]),
                                   sum(1 for n in doc["nodes"] if n["member"]))
            + ("; DOWN: " + ", ".join(n["url"] for n in down) if down else "")))
        out.append('<h2>Ring</h2><table id="ring"><tr><th>epoch</th><th>partitions</th><th>replicas (N)</th>'
                   '<th>write quorum (W)</th><th>read quorum (R)</th></tr>')
        out.append('<tr><td>%d</td><td>%d (2^%d)</td><td>%d</td><td>%d</td><td>%d</td></tr></table>' % (
            ring["epoch"], ring["partitions"], ring["partition_power"], ring["replicas"],
            doc["write_quorum"], doc["read_quorum"]))
    if doc["migration"]:
        out.append('<p>Migration mode: names missing from the cluster are read from the old server.</p>')
    out.append('<h2>Nodes</h2><table id="nodes"><tr><th>node</th><th>state</th><th>routed</th><th>epoch</th>'
               '<th>partitions owned</th><th>files</th><th>data</th><th>disk free</th>'
               '<th>held for others</th><th>differing (last sync)</th></tr>')
    for n in doc["nodes"]:
        s = n["status"]
        state = "up" if n["up"] else "DOWN"
        name = n["url"] + (" (leaving)" if n["leaving"] else "" if n["member"] else " (not in ring)")
        out.append('<tr class="node %s" data-node="%s"><td>%s</td><td class="state">%s</td><td>%s</td>'
                   '<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>' % (
                       "up" if n["up"] else "down", e(n["url"]), e(name), state,
                       e(_routed(n)), _cell(s.get("epoch")), _cell(s.get("partitions_owned")),
                       _cell(s.get("files")), e(human_bytes(s.get("bytes"))), e(human_bytes(s.get("free_bytes"))),
                       _cell(s.get("pending_handoff")), _cell(_sync(s).get("differing"))))
    out.append('</table>')
    for n in doc["nodes"]:
        if not n["up"]:
            out.append('<p class="error">%s</p>' % e(n["error"] or n["url"] + ": no answer"))
    out.append('<h2>Moves in progress</h2>')
    if doc["moves"]:
        out.append('<ul id="moves">' + "".join("<li>%s</li>" % e(line) for line in doc["moves"]) + '</ul>')
    else:
        out.append('<p id="moves">None: every node up holds only its own partitions'
                   + (' (nodes that are down are not counted)' if down else '') + '.</p>')
    out.append('<p><small>%s UTC; reloads every %d s. Metrics: <a href="/metrics">/metrics</a>.</small></p>'
               % (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(doc["time"])), REFRESH_SECONDS))
    out.append('</body></html>')
    return "\n".join(out)


class StatusPageHandler(BaseHandler):
    """``GET /status``: the HTML page (``?format=json``: the document it renders).

    A :class:`~filetracker.server.base.BaseHandler`, so the gateway's guard applies (with
    ``--auth-file``, a ``read`` token for the whole tree is needed).
    """

    def initialize(self, collector):
        self.collector = collector

    async def get(self):
        doc = await self.collector.get()
        self.set_header("Cache-Control", "no-store")
        if self.get_query_argument("format", "") == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(doc))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(render(doc))


def status_routes(services):
    """URL specs of the status page bound to ``services``."""
    return [(r"/status/?", StatusPageHandler, {"collector": StatusCollector(services)})]


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def _routed(node):
    """The "routed" cell: no (marked down or not a member), yes, or last for a slow node."""
    if not node["routed"]:
        return "no"
    if node.get("slow"):
        return "last (slow: %s ms to answer)" % node.get("fetch_ms")
    return "yes"
