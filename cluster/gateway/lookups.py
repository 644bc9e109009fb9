"""Record lookups and small reads of concurrent GETs, batched per node.

Under load many reads ask the same node for something at the same moment.  One
HTTP request each costs the node a full request cycle; instead a batcher keeps
at most one request of its kind in flight per node: names asked for while it
runs go together in the next one (no added delay: a lone name goes out at
once).

* :class:`LookupBatcher` -> ``POST /_cluster/lookup``: answers exactly those of
  ``HEAD /_cluster/files/<name>`` (tombstones included);
* :class:`ReadBatcher` -> ``POST /_cluster/read``: the record and, for a small
  file, its whole body (what ``GET /_cluster/files/<name>`` would send).

Both return ``(reply, record or None)`` like ``NodeClient.head_record``; a
node without the endpoint (404: an older version) is asked one name at a time.
"""

import asyncio
import logging

import msgpack

from cluster.gateway.nodes import NodeReply
from filetracker.records import Record

log = logging.getLogger(__name__)


class _Batcher:
    path = None
    max_batch = 64

    def __init__(self, client):
        self._client = client
        self._queues = {}      # url -> [(name, future)]
        self._running = set()  # urls with a request in flight
        self._no_endpoint = set()

    async def get(self, url, name):
        if url in self._no_endpoint:
            return await self.single(url, name)
        fut = asyncio.get_running_loop().create_future()
        self._queues.setdefault(url, []).append((name, fut))
        if url not in self._running:
            self._running.add(url)
            asyncio.ensure_future(self._drain(url))
        return await fut

    async def single(self, url, name):
        raise NotImplementedError

    def decode(self, url, reply, name, row):
        raise NotImplementedError

    async def _drain(self, url):
        try:
            while self._queues.get(url):
                queue = self._queues[url]
                batch, self._queues[url] = queue[:self.max_batch], queue[self.max_batch:]
                await self._send(url, batch)
        except BaseException as exc:  # noqa: BLE001 - never leave a reader waiting
            for _, fut in self._queues.pop(url, []):
                if not fut.done():
                    fut.set_exception(exc)
            raise
        finally:
            self._running.discard(url)

    async def _send(self, url, batch):
        reply = await self._client.request(url, "POST", self.path, body=msgpack.packb([n for n, _ in batch]),
                                           headers={"Content-Type": "application/msgpack"})
        if reply.code == 404:
            log.info("%s has no %s: one request per name", url, self.path)
            self._no_endpoint.add(url)
            for name, fut in batch:
                if not fut.done():
                    fut.set_result(await self.single(url, name))
            return
        rows = None
        if reply.code == 200:
            try:
                rows = msgpack.unpackb(reply.body, raw=False)
                if not isinstance(rows, list) or len(rows) != len(batch):
                    rows = None
            except Exception:  # noqa: BLE001 - a bad answer counts as none
                rows = None
        if rows is None:
            # no usable answer: each reader sees the failure (code None or the error status)
            failed = reply if reply.code != 200 else NodeReply(url, 502, {}, b"")
            for _, fut in batch:
                if not fut.done():
                    fut.set_result((failed, None))
            return
        for (name, fut), row in zip(batch, rows, strict=True):
            if not fut.done():
                fut.set_result(self.decode(url, reply, name, row))


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

    def __init__(self, client, first_bytes, timeout):
        super().__init__(client)
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
