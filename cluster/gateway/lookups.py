"""Record lookups and small reads of concurrent GETs, batched per node.

Under load many reads ask the same node for something at the same moment.  One
HTTP request each costs the node a full request cycle; instead a batcher keeps
at most one request in flight per node: names asked for while it runs go
together in the next one (no added delay: a lone name goes out at once).

* :class:`FetchBatcher` -> ``POST /_cluster/fetch``: lookups *and* reads in
  one request per node.  A gateway read asks one owner for the body and the
  other owners for their record, so every node gets both kinds; one request
  carrying both halves the requests a node answers under load (the request
  cycle, not the names, is what costs a node its CPU).  This is what the
  gateway uses; for a node without the endpoint (404: an older version) it
  falls back to the two batchers below (and asks again after
  :data:`RETRY_ENDPOINT_AFTER` seconds: the node may have been upgraded).
* :class:`LookupBatcher` -> ``POST /_cluster/lookup``: answers exactly those of
  ``HEAD /_cluster/files/<name>`` (tombstones included);
* :class:`ReadBatcher` -> ``POST /_cluster/read``: the record and, for a small
  file, its whole body (what ``GET /_cluster/files/<name>`` would send).

All return ``(reply, record or None)`` like ``NodeClient.head_record``; a
node without the batch endpoints is asked one name at a time.
"""

import asyncio
import logging
import time

import msgpack

from cluster.gateway.nodes import NodeReply
from filetracker.records import Record

log = logging.getLogger(__name__)

#: seconds a node that answered 404 for a batch endpoint is asked the single way before trying again
RETRY_ENDPOINT_AFTER = 60.0


class PerNodeBatcher:
    """At most one batch request in flight per node; what is asked meanwhile waits for the next.

    Per node a queue of ``(question, future)`` for each of :attr:`keys` (a
    question is a name, or what a subclass asks about); a subclass gives each
    key's batch limit (:meth:`_limit`, or cuts the batch itself: :meth:`_take`)
    and sends one batch (:meth:`_send`, a ``{key: [(question, future)]}``),
    resolving its futures.  Should :meth:`_send` raise, its futures get the
    failure (:meth:`_resolve_failed`) and the next batch goes out: no asker
    is ever left waiting.
    """

    keys = ()

    def __init__(self, client, latency=None):
        self._client = client
        self._latency = latency  # a ReplicaLatency timing each answered batch, or None
        self._queues = {}      # url -> {key: [(name, future)]}
        self._running = set()  # urls with a request in flight
        self._no_endpoint = {}  # url -> when its 404 was seen (see lacks_endpoint)

    def _enqueue(self, url, name, key):
        """A future of the answer about ``name``, resolved when its batch is answered.

        A plain future, not a coroutine: a GET awaits several of these, and one
        task or coroutine frame less per lookup is measurable on the hot path.
        """
        fut = asyncio.get_running_loop().create_future()
        self._queues.setdefault(url, {k: [] for k in self.keys})[key].append((name, fut))
        if url not in self._running:
            self._running.add(url)
            asyncio.ensure_future(self._drain(url))
        return fut

    def lacks_endpoint(self, url):
        """Whether ``url`` answered 404 for the batch endpoint (an older node) within the last
        :data:`RETRY_ENDPOINT_AFTER` seconds; after that it is asked again (it may have been
        upgraded meanwhile)."""
        seen = self._no_endpoint.get(url)
        if seen is None:
            return False
        if time.monotonic() - seen < RETRY_ENDPOINT_AFTER:
            return True
        del self._no_endpoint[url]
        return False

    def no_endpoint(self, url):
        """Note that ``url`` has no batch endpoint (it answered 404)."""
        self._no_endpoint[url] = time.monotonic()

    def _limit(self, key):
        raise NotImplementedError

    def _take(self, url, key, queue):
        """``(batch, rest)``: what of ``queue`` goes into the next request to ``url`` (at most
        :meth:`_limit`)."""
        limit = self._limit(key)
        return queue[:limit], queue[limit:]

    @staticmethod
    async def _each_alone(batch, single):
        """Resolve each ``(question, future)`` of ``batch`` with ``await single(question)``, all
        asked at once (a node without the batch endpoint: one request per question)."""
        answers = await asyncio.gather(*(single(question) for question, _ in batch))
        for (_, fut), answer in zip(batch, answers, strict=True):
            if not fut.done():
                fut.set_result(answer)

    def _take_waiting(self, url, key):
        """Every ``(question, future)`` waiting for ``url`` under ``key``, taken off its queue
        (for a subclass that fails them together with the batch in flight)."""
        queues = self._queues.get(url)
        if not queues:
            return []
        waiting, queues[key] = queues[key], []
        return waiting

    async def _post(self, url, path, body):
        """POST a msgpack ``body`` to ``url``.  The time to the answer's first byte is noted
        (cluster/gateway/latency.py: reads ask a much slower node last); the body's transfer
        is left out, as a batch carrying file bodies takes longer for no fault of the node.
        Only 200 answers are timed: a quick refusal says nothing of how fast the node serves."""
        data = msgpack.packb(body)
        started = time.monotonic()
        reply = await self._client.request(url, "POST", path, body=data,
                                           headers={"Content-Type": "application/msgpack"})
        if self._latency is not None and reply.code == 200 and reply.first_byte_at >= started:
            self._latency.observe(url, reply.first_byte_at - started)
        return reply

    def _resolve_failed(self, fut, exc):
        """Resolve ``fut``, whose batch failed with ``exc`` (by default: with that exception)."""
        fut.set_exception(exc)

    def _fail(self, lists, exc):
        for items in lists:
            for _, fut in items:
                if not fut.done():
                    self._resolve_failed(fut, exc)

    async def _send(self, url, batch):
        raise NotImplementedError

    async def _drain(self, url):
        batch = {}
        try:
            while True:
                queues = self._queues.get(url)
                if not queues or not any(queues.values()):
                    break
                batch = {}
                for key, queue in queues.items():
                    batch[key], queues[key] = self._take(url, key, queue)
                try:
                    await self._send(url, batch)
                except Exception as exc:  # noqa: BLE001 - e.g. an answer we cannot use: this batch fails
                    log.error("batch request to %s failed: %s: %s", url, type(exc).__name__, exc)
                    self._fail(batch.values(), exc)
        except BaseException as exc:  # cancelled (shutdown): never leave an asker waiting
            self._fail(list(batch.values()) + list(self._queues.pop(url, {}).values()), exc)
            raise
        finally:
            self._running.discard(url)


class _Batcher(PerNodeBatcher):
    """One endpoint taking a msgpack list of names: :attr:`path`, at most :attr:`max_batch` names."""

    path = None
    max_batch = 64
    keys = ("names",)

    async def get(self, url, name):
        if self.lacks_endpoint(url):
            return await self.single(url, name)
        return await self._enqueue(url, name, "names")

    def _limit(self, key):
        return self.max_batch

    async def single(self, url, name):
        raise NotImplementedError

    def decode(self, url, reply, name, row):
        raise NotImplementedError

    async def _send(self, url, batch):
        batch = batch["names"]
        reply = await self._post(url, self.path, [n for n, _ in batch])
        if reply.code == 404:
            log.info("%s has no %s: one request per name", url, self.path)
            self.no_endpoint(url)
            await self._each_alone(batch, lambda name: self.single(url, name))
            return
        if reply.code is None:
            batch = batch + self._take_waiting(url, "names")   # see FetchBatcher._send
        settle(self, url, reply, batch, answer_rows(msgpack_answer(reply), len(batch)))


def msgpack_answer(reply):
    """The decoded msgpack body of a 200 answer, or None (an error status, bad msgpack)."""
    if reply.code != 200:
        return None
    try:
        return msgpack.unpackb(reply.body, raw=False)
    except Exception:  # noqa: BLE001 - a bad answer counts as none
        return None


def answer_rows(rows, count):
    """``rows`` when it is a list of ``count`` answer rows, else None (an unusable answer)."""
    return rows if isinstance(rows, list) and len(rows) == count else None


def settle(kind, url, reply, batch, rows):
    """Resolve every ``(name, future)`` of ``batch`` with ``kind.decode`` of its row; when ``rows`` is
    None each reader sees the failure (the error status, or 502 for an unusable answer)."""
    if rows is None:
        failed = reply if reply.code != 200 else NodeReply(url, 502, {}, b"")
        for _, fut in batch:
            if not fut.done():
                fut.set_result((failed, None))
        return
    for (name, fut), row in zip(batch, rows, strict=True):
        if not fut.done():
            fut.set_result(kind.decode(url, reply, name, row))


def _record(name, version, sha256, size, deleted):
    return Record(name=name, version=int(version), sha256=sha256 or "", size=int(size or 0), deleted=bool(deleted))


class LookupBatcher(_Batcher):
    """``await get(url, name)`` -> the record lookup of ``HEAD /_cluster/files/<name>``."""

    path = "/_cluster/lookup"
    max_batch = 256

    async def single(self, url, name):
        return await self._client.head_record(url, name)

    def decode(self, url, reply, name, row):
        return NodeReply(url, 200, reply.headers, b""), None if row is None else _record(name, *row)


class ReadBatcher(_Batcher):
    """``await get(url, name)`` -> ``(reply, record)``; ``reply.body`` is the whole body of a
    small file (code 200), empty for a larger one (the caller fetches pieces); 404 for no
    live record; 503 for a blob that failed verification."""

    path = "/_cluster/read"
    max_batch = 64

    def __init__(self, client, first_bytes, timeout, latency=None):
        super().__init__(client, latency)
        self._first_bytes = first_bytes
        self._timeout = timeout

    async def single(self, url, name):
        return await self._client.get_file(url, name, self._first_bytes, self._timeout)

    def decode(self, url, reply, name, row):
        kind = row[0]
        if kind == "ok":
            _, version, sha256, size, data = row
            return NodeReply(url, 200, reply.headers, data), _record(name, version, sha256, size, False)
        if kind == "big":
            _, version, sha256, size = row
            return NodeReply(url, 200, reply.headers, b""), _record(name, version, sha256, size, False)
        if kind == "missing":
            return NodeReply(url, 404, reply.headers, b""), None if row[1] is None else _record(name, *row[1])
        return NodeReply(url, 503, {"X-Exception": str(row[1])[:200]}, b""), None


class FetchBatcher(PerNodeBatcher):
    """``await lookup(url, name)`` / ``await read(url, name)``: what :class:`LookupBatcher` and
    :class:`ReadBatcher` answer, both kinds batched into one ``POST /_cluster/fetch`` per node
    (at most one in flight per node).  Both return a future at once: the request is queued
    when called, so a caller may start several and await them later without making tasks."""

    path = "/_cluster/fetch"
    keys = ("lookup", "read")

    def __init__(self, lookups, reads, latency=None):
        super().__init__(lookups._client, latency)
        self._lookups = lookups   # a LookupBatcher: decodes lookup rows; the fallback
        self._reads = reads       # a ReadBatcher: decodes read rows; the fallback

    def lookup(self, url, name):
        return self._get(url, name, "lookup")

    def read(self, url, name):
        return self._get(url, name, "read")

    def _kind(self, key):
        return self._lookups if key == "lookup" else self._reads

    def _limit(self, key):
        return self._kind(key).max_batch

    def _get(self, url, name, key):
        if self.lacks_endpoint(url):
            return asyncio.ensure_future(self._kind(key).get(url, name))
        return self._enqueue(url, name, key)

    async def _send(self, url, batch):
        reply = await self._post(url, self.path, {key: [n for n, _ in items] for key, items in batch.items() if items})
        if reply.code == 404:
            log.info("%s has no %s: lookups and reads go separately", url, self.path)
            self.no_endpoint(url)
            for key, items in batch.items():
                for name, fut in items:
                    self._forward(self._kind(key).get(url, name), fut)
            return
        if reply.code is None:
            # unreachable or timed out (the client marked it down): what queued for it meanwhile
            # fails with this batch, now, and its readers ask other replicas, instead of waiting
            # for a second batch to time out (GETs took twice the timeout)
            batch = {key: items + self._take_waiting(url, key) for key, items in batch.items()}
        answer = msgpack_answer(reply)
        for key, items in batch.items():
            if items:
                rows = answer.get(key) if isinstance(answer, dict) else None
                settle(self._kind(key), url, reply, items, answer_rows(rows, len(items)))

    @staticmethod
    def _forward(coro, fut):
        """Resolve ``fut`` with the outcome of ``coro`` (run as its own task)."""
        def done(task):
            if fut.done():
                return
            if task.cancelled():
                fut.cancel()
            elif task.exception() is not None:
                fut.set_exception(task.exception())
            else:
                fut.set_result(task.result())
        asyncio.ensure_future(coro).add_done_callback(done)
