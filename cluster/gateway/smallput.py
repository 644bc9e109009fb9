"""Small PUTs through the gateway: the whole body in hand, replicas written in batches.

A PUT whose body is at most :data:`SMALL_PUT_MAX` bytes (after gzip decoding)
is received whole and sent to its replicas with ``POST /_cluster/store``
(:mod:`cluster.node.writebatch`) instead of one streamed
``PUT /_cluster/files/<name>`` per replica.  :class:`StoreBatcher` keeps at most
one of those requests in flight per node and puts every small PUT that arrives
meanwhile into the next one (no added delay: a lone PUT goes out at once),
like the reads of :mod:`cluster.gateway.lookups`.  Under load a node then
answers one request per batch instead of one per file, and the gateway sends
one instead of three per PUT.

Everything else is the streamed PUT's: the same targets (owners, then handoff
nodes with a hint for an owner that is down or refuses), the same quorum W,
the same answers (:func:`cluster.gateway.writes.judge`), the same durability
(a node answers once the file is fsynced and its record committed).  A body
that this path cannot take as it is (larger once decoded, a corrupt gzip
stream, a malformed checksum or size header, another encoding) goes the
streamed way, whose nodes give the error answer they always gave
(:func:`small_body` returns None).  A node without the endpoint (an older
version) gets the file as a plain ``PUT`` from then on.
"""

import asyncio
import hashlib
import logging

import msgpack

from cluster.gateway.lookups import PerNodeBatcher, answer_rows, msgpack_answer
from cluster.gateway.nodes import quote_name, record_from_headers
from cluster.gateway.targets import TargetPicker
from cluster.gateway.writes import REFUSALS, first_successes, judge, longest_retry_after
from cluster.peers import INLINE_BATCH_BYTES, INLINE_BATCH_COUNT, INLINE_BLOB_MAX
from filetracker.httpdate import MAX_VERSION
from filetracker.records import Record
from filetracker.server.streaming import GzipDecoder
from filetracker.server.upload_body import logical_size_header, sha256_header

log = logging.getLogger(__name__)

#: largest body (decoded) written through ``POST /_cluster/store``
SMALL_PUT_MAX = INLINE_BLOB_MAX
#: versions and sizes a node stores (SQLite's 64-bit integers); anything larger goes the streamed way
MAX_INTEGER = 2 ** 63 - 1
#: time a node may take per file of a batch, on top of the gateway's --timeout (64 files: 3.2 s)
SECONDS_PER_FILE = 0.05
#: most content waiting for one node (16 full requests); more is refused, see :class:`StoreBatcher`
MAX_QUEUED_BYTES = 16 * INLINE_BATCH_BYTES



class SmallBody:
    """The plain content of a small PUT and what the client announced of it (None: nothing)."""

    __slots__ = ("data", "sha256", "size")

    def __init__(self, data, sha256=None, size=None):
        self.data = data
        self.sha256 = sha256
        self.size = size


def batchable(headers, version):
    """Whether a PUT of ``version`` with these request headers may be received whole and
    batched: a ``Content-Length`` of at most :data:`SMALL_PUT_MAX` (not chunked), a version a
    node stores.  (Its body may still turn out not to be: :func:`small_body`.)"""
    return 0 <= version <= MAX_VERSION and small_length(headers) is not None


def small_length(headers):
    """The ``Content-Length`` of a request whose body may be small enough, else None."""
    length = headers.get("Content-Length", "")
    if "Transfer-Encoding" in headers or not (length.isascii() and length.isdigit()) or len(length) > 19:
        return None
    length = int(length)
    return length if length <= SMALL_PUT_MAX else None


def small_body(headers, body):
    """The :class:`SmallBody` of a received PUT body, or None when the streamed path must take it.

    ``body`` is what the client sent (gzip-compressed with ``Content-Encoding:
    gzip``).  None for another encoding, a corrupt or over-long gzip stream, a
    malformed ``SHA256-Checksum`` or ``Logical-Size``: the nodes' answers to
    those are the ones clients always got.
    """
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        data = _gunzip(body)
        if data is None:
            return None
    elif encoding == "identity":
        data = bytes(body)
    else:
        return None
    sha256, size = headers.get("SHA256-Checksum"), headers.get("Logical-Size")
    try:  # parsed as the nodes parse them
        sha256 = None if sha256 is None else sha256_header(sha256)
        size = None if size is None else logical_size_header(size)
    except ValueError:
        return None
    if size is not None and size > MAX_INTEGER:
        return None
    return SmallBody(data, sha256, size)


def _gunzip(body):
    """The decoded ``body``, or None when it is corrupt or longer than :data:`SMALL_PUT_MAX`."""
    decoder, out, total = GzipDecoder(), [], 0
    try:
        for piece in decoder.feed(body):
            total += len(piece)
            if total > SMALL_PUT_MAX:
                return None
            out.append(piece)
        decoder.close()
    except ValueError:
        return None
    return b"".join(out)


class Stored:
    """What one node answered about one file.

    ``code`` is 200 with ``record`` (the winner after the merge), the node's
    error status for that file, the status of the whole request when it failed,
    or None when the node could not be reached; ``reason`` is a one-line
    explanation; ``retry_after`` the node's ``Retry-After`` (a busy node's 503).
    """

    __slots__ = ("code", "record", "reason", "retry_after")

    def __init__(self, code, record=None, reason="", retry_after=None):
        self.code = code
        self.record = record
        self.reason = reason
        self.retry_after = retry_after


class StoreBatcher(PerNodeBatcher):
    """``await put(url, item)`` -> the :class:`Stored` answer about one file on one node.

    ``item`` is the map of one file of ``POST /_cluster/store``.  At most
    :data:`MAX_QUEUED_BYTES` of content wait for one node: beyond that (a node
    slower than the writes to it) a file is refused at once with 503, so its
    share goes to a handoff node as a refused streamed PUT's would.  A request
    may take ``timeout`` (None: the client's) plus :data:`SECONDS_PER_FILE` per
    file: the node fsyncs its files one after the other.  ``batches``,
    ``files`` and ``refused`` count what was sent and refused (metrics).
    """

    path = "/_cluster/store"
    keys = ("files",)

    def __init__(self, client, timeout=None):
        super().__init__(client)
        self._timeout = timeout
        self._queued = {}  # url -> bytes of content waiting (not yet in a request)
        self.batches = self.files = self.refused = 0

    def queued_bytes(self):
        """Content waiting for every node, in bytes."""
        return sum(self._queued.values())

    def put(self, url, item):
        if self.lacks_endpoint(url):
            return asyncio.ensure_future(self._single(url, item))
        size = len(item["data"])
        queued = self._queued.get(url, 0)
        if queued and queued + size > MAX_QUEUED_BYTES:
            self.refused += 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(Stored(503, reason="%s: 503 the gateway's queue for this node is full (%d bytes)"
                                  % (url, queued)))
            return fut
        self._queued[url] = queued + size
        return self._enqueue(url, item, "files")

    def _take(self, url, key, queue):
        total, cut = 0, len(queue)
        for i, (item, _) in enumerate(queue):
            if i == INLINE_BATCH_COUNT or (i and total + len(item["data"]) > INLINE_BATCH_BYTES):
                cut = i
                break
            total += len(item["data"])
        self._queued[url] = max(0, self._queued.get(url, 0) - total)
        return queue[:cut], queue[cut:]

    def _resolve_failed(self, fut, exc):
        fut.set_result(Stored(502, reason="%s: %s" % (type(exc).__name__, exc)))

    async def _send(self, url, batch):
        batch = batch["files"]
        self.batches += 1
        self.files += len(batch)
        timeout = None if self._timeout is None else self._timeout + SECONDS_PER_FILE * len(batch)
        reply = await self._client.request(url, "POST", self.path, body=msgpack.packb([i for i, _ in batch]),
                                           headers={"Content-Type": "application/msgpack"}, timeout=timeout)
        if reply.code == 404:
            log.info("%s has no %s: one PUT per file", url, self.path)
            self.no_endpoint(url)
            await self._each_alone(batch, lambda item: self._single(url, item))
            return
        if reply.code is None:
            # unreachable or timed out (the client marked it down): what waits for it fails too,
            # now, and goes to handoff nodes, instead of one batch per timeout
            batch = batch + self._take_waiting(url, "files")
            self._queued[url] = 0
        rows = answer_rows(msgpack_answer(reply), len(batch))
        for index, (item, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result(_failed(reply) if rows is None else _decoded(url, item["name"], rows[index]))

    async def _single(self, url, item):
        """One file as a plain ``PUT /_cluster/files/<name>`` (a node without the endpoint)."""
        headers = {"Content-Type": "application/octet-stream"}
        if item["sha256"]:
            headers["SHA256-Checksum"] = item["sha256"]
        if item["size"] is not None:
            headers["Logical-Size"] = str(item["size"])
        if item["hint"]:
            headers["X-Hint-For"] = item["hint"]
        reply = await self._client.request(
            url, "PUT", "/_cluster/files%s?version=%d" % (quote_name(item["name"]), item["version"]),
            body=item["data"], headers=headers)
        record = record_from_headers(item["name"], reply.headers) if reply.code == 200 else None
        if record is None:
            return _failed(reply)
        return Stored(200, record)


def _failed(reply):
    """The :class:`Stored` of a failed request (502 for a 200 answer that made no sense)."""
    if reply.code == 200:
        return Stored(502, reason="%s: an unusable answer" % reply.url)
    return Stored(reply.code, reason=reply.reason(), retry_after=reply.headers.get("Retry-After"))


def _decoded(url, name, row):
    try:
        if row[0] == "ok":
            _, version, sha256, size, deleted, _applied = row
            return Stored(200, Record(name=name, version=int(version), sha256=sha256, size=int(size),
                                      deleted=bool(deleted)))
        _, code, message = row
        return Stored(int(code), reason="%s: %d %s" % (url, int(code), message))
    except Exception:  # noqa: BLE001 - whatever the row is, it says nothing usable
        return Stored(502, reason="%s: an unusable answer row" % url)


async def batched_put(services, name, version, body):
    """Write the :class:`SmallBody` ``body`` as ``name`` at ``version`` to W replicas: a
    :class:`~cluster.gateway.writes.WriteOutcome` (the rest finish in the background)."""
    view = services.view
    placement = view.placement(name)
    picker = TargetPicker(view, placement)
    quorum = min(services.config.write_quorum, len(placement.owners))
    failures, retry_after = [], []

    async def one(node, hint_for):
        while True:
            item = {"name": name, "version": version, "data": body.data, "sha256": body.sha256,
                    "size": body.size, "hint": hint_for}
            answer = await services.stores.put(node.url, item)
            if answer.record is not None:
                return answer.record
            failures.append((answer.code, answer.reason))
            if answer.code is not None and answer.code not in REFUSALS:
                return None  # the node answered: an error of the request, not of the node
            if answer.retry_after:
                retry_after.append(answer.retry_after)
            # unreachable (marked down by the client), or up but taking no data now (the
            # reserve, its upload bound): its share goes to a handoff node as a hint
            sub = picker.replacement(TargetPicker.hint_after_failure(node, hint_for))
            if sub is None:
                return None
            node, hint_for = sub

    successes = await first_successes(services, picker, quorum, one)
    outcome = judge(successes, failures, quorum, "file", longest_retry_after(retry_after))
    # whether the winner is this upload: the body is at most SMALL_PUT_MAX, hashed at once
    outcome.sent_sha256 = body.sha256 or hashlib.sha256(body.data).hexdigest()
    return outcome
