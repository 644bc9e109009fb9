"""Reads through the gateway: quorum record lookup, body pieces, read repair.

* :func:`direct_read` is the common case in one round trip: the first live
  owner is asked for the record *and* the first piece of the body while the
  other R-1 owners are asked for their record (both batched per node with
  the concurrent reads of other names, :mod:`cluster.gateway.lookups`); when
  the first owner holds the winner of those R records, its bytes are served.  Anything unusual (a node
  not answering, disagreeing replicas) leaves the rest to the paths below.
* :func:`quorum_read` asks every live owner for the record at once and
  returns as soon as R of them answered (a hung node costs nothing beyond the
  others' latency, and never more than the timeout); the winner is picked by
  :func:`filetracker.records.merge_all`.
* :func:`fetch_piece` reads ``[start, end]`` of a blob from the first holder
  that delivers it whole, so a replica failing before the first byte of a
  piece is replaced without corrupting the answer; :func:`open_body` starts
  a streamed read of a range (the rest of a large GET).
* :func:`read_repair` (background) sends the winner to replicas that answered
  with an older record, streaming the blob when they lack it.
"""

import asyncio
import logging

import msgpack

from cluster.gateway.pool import BodyStream
from cluster.gateway.upload import ReplicaUpload, pieces
from filetracker.records import beats, merge_all

log = logging.getLogger(__name__)

#: slowest acceptable transfer rate of one piece from a replica, on top of the timeout
SLOWEST_PIECE_BYTES_PER_S = 10 * 1024 * 1024


class QuorumRead:
    """What a quorum read learned.

    ``answers`` maps node URL -> record (None: the node has no record) for
    every node that answered in time; ``winner`` is their merge; ``enough``
    says whether R nodes answered; ``late`` are lookups still running (used
    by read repair).
    """

    def __init__(self, name, answers, enough, late, nodes):
        self.name = name
        self.answers = answers
        self.enough = enough
        self.late = late
        self.nodes = nodes
        self.winner = merge_all(answers.values())

    def holders(self):
        """URLs of nodes that answered with exactly the winning record."""
        return [url for url, r in self.answers.items() if r is not None and r == self.winner]


class DirectRead:
    """What :func:`direct_read` got: ``read`` (a :class:`QuorumRead` of the R owners
    asked) and ``first`` (the first piece of the winner's body, or None)."""

    __slots__ = ("read", "first")

    def __init__(self, read, first):
        self.read = read
        self.first = first


async def direct_read(services, name, with_body):
    """Ask exactly R live owners at once; the first one also for the first piece of the body.

    Owners much slower than the others come last (``view.latency``), so with
    R < N a slow owner is not asked while enough others are live.

    Returns None when fewer than R owners are live or one of them did not
    answer with a record lookup (the caller falls back to :func:`quorum_read`).
    Replicas found stale are repaired in the background.
    """
    view = services.view
    placement = view.placement(name)
    needed = min(services.config.read_quorum, len(placement.owners))
    live = [n for n in placement.owners if view.is_live(n.url)]
    live = view.latency.fast_first(live)[:needed]  # a node far slower than the others only when needed
    if needed < 1 or len(live) < needed:
        return None
    step = services.config.range_size
    others = [services.fetches.lookup(n.url, name) for n in live[1:]]  # futures, queued now
    if with_body:
        first = await services.fetches.read(live[0].url, name)
    else:
        first = await services.fetches.lookup(live[0].url, name)
    results = [first] + [await f for f in others]
    answers = {}
    for reply, record in results:
        if reply.code not in (200, 206, 404):
            return None
        answers[reply.url] = record
    read = QuorumRead(name, answers, True, set(), live)
    winner = read.winner
    if any(beats(winner, r) for r in answers.values()):
        services.spawn(read_repair(services, read))
    data = None
    reply, record = first
    if with_body and winner is not None and not winner.deleted and record == winner \
            and reply.code in (200, 206) and len(reply.body) == min(winner.size, step):
        data = reply.body
    return DirectRead(read, data)


async def quorum_read(services, name):
    view = services.view
    placement = view.placement(name)
    candidates = [n for n in placement.owners if view.is_live(n.url)]
    needed = min(services.config.read_quorum, len(placement.owners))
    if len(candidates) < needed:
        # not enough live owners: ask handoff nodes too (they may hold hinted writes)
        candidates += [n for n in placement.handoffs if view.is_live(n.url)][:needed - len(candidates)]
    if len(candidates) < needed:
        # still short: owners marked down are asked too (a stale mark, e.g. nodes that were
        # still starting, must not cost a certain 503)
        candidates += [n for n in placement.owners if not view.is_live(n.url)]
    tasks = {asyncio.ensure_future(services.client.head_record(n.url, name)): n for n in candidates}
    answers = {}
    pending = set(tasks)
    while pending and len(answers) < needed:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            reply, record = t.result()
            if reply.code in (200, 404):
                answers[reply.url] = record
    return QuorumRead(name, answers, len(answers) >= needed, pending, candidates)


def _missed(read):
    return read.enough and (read.winner is None or read.winner.deleted)


async def widen_read(services, read):
    """Ask the other nodes that may hold the file, on a miss or right after a ring change.

    A 404 must not be answered while an owner that may hold the file was not
    asked: right after a ring change the R asked can be a lagging owner and a
    new one, neither holding an acknowledged file.  So on a miss (no live record
    among the R answers) the remaining owners, the owners under the previous
    ring (when the gateway saw the change) and the first handoff nodes (hinted
    writes not yet handed back) are asked at once.

    The same pair can hold an *older* version: the write reached W of the
    previous owners, and a new owner has not received it yet.  So while a node
    holds the name's partition without owning it (the gateway polls the nodes:
    :mod:`cluster.gateway.holders`), that node is asked on every read too; and
    for ``transition_reads`` seconds after a ring change that moved the name, its
    owners under every ring replaced in that time are asked as well
    (:meth:`ClusterView.transition_owners`: two changes in a row are covered).

    Returns ``read`` itself when nobody else has a newer record, else a
    :class:`QuorumRead` of every answer (its repair targets only the current
    owners; a former owner or a handoff node is just a holder).  Misses and
    ring changes are rare, so the extra requests are cheap.
    """
    if not read.enough:
        return read
    view = services.view
    missed = _missed(read)
    others = [] if missed else view.transition_owners(read.name)
    if not missed and not others:
        return read
    placement = view.placement(read.name)
    owners = {n.url for n in placement.owners}
    extra, seen = [], set(read.answers) | {n.url for n in read.nodes}
    if missed:
        others = list(placement.owners) + view.previous_owners(read.name) + view.transition_owners(read.name) + \
            list(placement.handoffs[:len(placement.owners)])
    for n in others:
        if n.url not in seen and view.is_live(n.url):
            seen.add(n.url)
            extra.append(n)
    if not extra:
        return read
    results = await asyncio.gather(*(services.fetches.lookup(n.url, read.name) for n in extra))
    found = {reply.url: record for reply, record in results
             if reply.code in (200, 404) and record is not None}
    winner = merge_all([read.winner] + list(found.values()))
    if winner is None or winner == read.winner:
        return read
    answers = dict(read.answers)
    for url, record in found.items():
        if url in owners or record == winner:
            answers[url] = record
    for n in placement.owners:  # owners asked now that answered without a record get repaired too
        if n.url not in answers and any(r.url == n.url and r.code in (200, 404) for r, _ in results):
            answers[n.url] = None
    log.info("read of %s %s on %s; found version %d on %s", read.name,
             "missed" if missed else "after a ring change got version %s" % (
                 read.winner.version if read.winner is not None else None),
             sorted(read.answers), winner.version, sorted(u for u, r in found.items() if r == winner))
    return QuorumRead(read.name, answers, True, set(), list(read.nodes) + extra)


def _live_first(services, holders):
    """``holders`` with those marked down last, not never: they just answered the record lookup;
    before those, the slow ones (cluster/gateway/latency.py)."""
    view = services.view
    live = [u for u in holders if view.is_live(u)]
    return view.latency.fast_first(live, key=_same) + [u for u in holders if u not in live]


def _same(url):
    return url


async def fetch_piece(services, holders, sha256, start, end):
    """Bytes ``start..end`` (inclusive) of blob ``sha256`` from the first holder
    that delivers them whole; ``(data, holder_url)`` or ``(None, None)``."""
    length = end - start + 1
    timeout = services.config.timeout + length / SLOWEST_PIECE_BYTES_PER_S
    for url in _live_first(services, holders):
        reply = await services.client.request(url, "GET", "/_cluster/blobs/" + sha256,
                                              headers={"Range": "bytes=%d-%d" % (start, end)},
                                              timeout=timeout)
        data = reply.body
        if reply.code == 200 and len(data) > length:
            data = data[start:end + 1]  # the node ignored Range (small body)
        if reply.code in (200, 206) and len(data) == length:
            return data, url
        log.warning("piece %d-%d of %s from %s failed: %s", start, end, sha256, url, reply.reason())
    return None, None


async def open_body(services, holders, sha256, start, end):
    """A streamed read of bytes ``start..end`` (inclusive) of blob ``sha256`` from the
    first holder that answers with exactly that range: ``(BodyStream, holder_url)``
    or ``(None, None)``.  Live holders are asked first, in the given order."""
    length = end - start + 1
    for url in _live_first(services, holders):
        reply = await services.client.request(url, "GET", "/_cluster/blobs/" + sha256,
                                              headers={"Range": "bytes=%d-%d" % (start, end)}, stream=True)
        body = reply.body
        if isinstance(body, BodyStream):
            if body.length == length and (start == 0 if reply.code == 200 else _starts_at(reply, start)):
                return body, url
            body.close()
        log.warning("bytes %d-%d of %s from %s failed: %s", start, end, sha256, url, reply.reason())
    return None, None


def _starts_at(reply, start):
    """True for a 206 answer whose Content-Range begins at byte ``start``."""
    return reply.code == 206 and reply.headers.get("Content-Range", "").startswith("bytes %d-" % start)


async def read_repair(services, read):
    """Bring replicas that answered with an older record up to the winner."""
    answers = dict(read.answers)
    if read.late:
        done, _ = await asyncio.wait(read.late, timeout=services.config.timeout * 2)
        for t in done:
            reply, record = t.result()
            if reply.code in (200, 404):
                answers[reply.url] = record
    winner = merge_all(answers.values())
    if winner is None:
        return
    holders = [u for u, r in answers.items() if r == winner]
    stale = [u for u, r in answers.items() if beats(winner, r)]
    for url in stale:
        # one repair per (node, record) at a time: every read of a hot file that sees the stale
        # replica meanwhile would otherwise stream its own copy of the blob to that node
        key = (url, winner)
        if key in services.repairs:
            continue
        services.repairs.add(key)
        try:
            await push_record(services, url, winner, holders)
        except Exception:  # noqa: BLE001 - repair is best effort; anti-entropy catches up
            log.exception("read repair of %s on %s failed", winner.name, url)
        finally:
            services.repairs.discard(key)


async def push_record(services, url, record, holders):
    """Merge ``record`` into node ``url``; stream the blob from a holder if it lacks it."""
    reply = await services.client.request(url, "POST", "/_cluster/records",
                                          body=msgpack.packb([record.to_dict()]),
                                          headers={"Content-Type": "application/msgpack"})
    if reply.code != 200:
        log.warning("read repair: %s", reply.reason())
        return False
    missing = msgpack.unpackb(reply.body, raw=False).get("missing", []) if reply.body else []
    if record.deleted or record.sha256 not in missing:
        log.info("read repair: %s@%d record sent to %s", record.name, record.version, url)
        return True
    return await copy_blob(services, url, record, holders)


async def copy_blob(services, url, record, holders):
    """Stream the blob of ``record`` from ``holders`` into node ``url`` (piece by piece)."""
    target = next((n for n in services.view.all_nodes() if n.url == url), None)
    if target is None:
        return False
    headers = dict(services.client.headers())
    headers["SHA256-Checksum"] = record.sha256
    headers["Content-Length"] = str(record.size)
    up = ReplicaUpload(services.client.pool, target, None, record.name, record.version, headers,
                       services.config.timeout, services.view)
    try:
        await up.open()
    except Exception as exc:  # noqa: BLE001
        up.abort(str(exc))
        return False
    up.start()
    step = services.config.range_size
    for start in range(0, record.size, step):
        end = min(start + step, record.size) - 1
        data, _ = await fetch_piece(services, holders, record.sha256, start, end)
        if data is None:
            up.abort("no holder delivered the blob")
            await up.task
            return False
        for piece in pieces(data):  # the upload queue counts pieces: this bounds its memory
            if not await up.feed(piece):
                await up.task
                return False
    await up.end()
    await up.task
    log.info("read repair: %s@%d streamed to %s: %s", record.name, record.version, url,
             "ok" if up.ok else up.reason())
    return up.ok
