"""Pure parts of batched small PUTs: which bodies the gateway batches, how a node's queue is cut
into requests, and the node's parsing and answer rows (cluster/gateway/smallput.py,
cluster/node/writebatch.py)."""

import asyncio
import gzip
import hashlib

import msgpack
import pytest

from cluster.gateway.smallput import SMALL_PUT_MAX, StoreBatcher, small_body, small_length
from cluster.node.writebatch import answer_row, parse_items
from cluster.peers import INLINE_BATCH_BYTES, INLINE_BATCH_COUNT
from filetracker.httpdate import MAX_VERSION
from filetracker.records import Record
from filetracker.server import HTTPFail
from filetracker.storage import ChecksumMismatch, SizeMismatch, StoreFull


@pytest.mark.parametrize("headers,expected", [
    ({"Content-Length": "0"}, 0),
    ({"Content-Length": "4096"}, 4096),
    ({"Content-Length": str(SMALL_PUT_MAX)}, SMALL_PUT_MAX),
    ({"Content-Length": str(SMALL_PUT_MAX + 1)}, None),
    ({"Content-Length": "12", "Transfer-Encoding": "chunked"}, None),
    ({"Transfer-Encoding": "chunked"}, None),
    ({}, None),
    ({"Content-Length": "-1"}, None),
    ({"Content-Length": "\u0661\u0662"}, None),  # Arabic-Indic digits: isdigit() but not ASCII
])
def test_small_length(headers, expected):
    assert small_length(headers) == expected


def test_small_body_plain_and_announcements():
    body = small_body({"SHA256-Checksum": " " + "AB" * 32 + " ", "Logical-Size": " 3 "}, memoryview(b"abc"))
    assert (body.data, body.sha256, body.size) == (b"abc", "ab" * 32, 3)
    assert isinstance(body.data, bytes)
    assert small_body({"Content-Encoding": "Identity"}, b"x").data == b"x"
    body = small_body({}, b"")
    assert (body.data, body.sha256, body.size) == (b"", None, None)


def test_small_body_gzip():
    data = b"hello " * 1000
    body = small_body({"Content-Encoding": "gzip"}, gzip.compress(data))
    assert body.data == data
    # concatenated members are one body (as the nodes decode them)
    assert small_body({"Content-Encoding": "gzip"}, gzip.compress(b"ab") + gzip.compress(b"cd")).data == b"abcd"
    at_limit = b"z" * SMALL_PUT_MAX
    assert small_body({"Content-Encoding": "gzip"}, gzip.compress(at_limit)).data == at_limit


@pytest.mark.parametrize("headers,body", [
    ({"Content-Encoding": "gzip"}, gzip.compress(b"z" * (SMALL_PUT_MAX + 1))),   # decodes above the limit
    ({"Content-Encoding": "gzip"}, gzip.compress(b"abc")[:-4]),                   # truncated
    ({"Content-Encoding": "gzip"}, b"not gzip at all"),
    ({"Content-Encoding": "gzip"}, b""),
    ({"Content-Encoding": "br"}, b"x"),
    ({"SHA256-Checksum": "abc"}, b"x"),
    ({"SHA256-Checksum": "g" * 64}, b"x"),
    ({"Logical-Size": "-1"}, b"x"),
    ({"Logical-Size": "1.5"}, b"x"),
    ({"Logical-Size": str(2 ** 63)}, b"x"),
    ({"Logical-Size": "9" * 5000}, b"x"),                                          # int() would refuse it
], ids=["gzip-above-limit", "gzip-truncated", "not-gzip", "gzip-empty", "brotli", "sha-short", "sha-not-hex",
        "size-negative", "size-fraction", "size-2**63", "size-5000-digits"])
def test_small_body_leaves_the_rest_to_the_streamed_path(headers, body):
    assert small_body(headers, body) is None


def _queue(sizes):
    return [({"data": b"x" * n}, None) for n in sizes]


@pytest.mark.parametrize("sizes,first", [
    ([1] * 10, 10),
    ([1] * (INLINE_BATCH_COUNT + 5), INLINE_BATCH_COUNT),
    ([SMALL_PUT_MAX] * 6, INLINE_BATCH_BYTES // SMALL_PUT_MAX),
    ([SMALL_PUT_MAX, SMALL_PUT_MAX, SMALL_PUT_MAX, SMALL_PUT_MAX - 1, 2, 1], 4),
    ([SMALL_PUT_MAX] * 3 + [SMALL_PUT_MAX - 1, 1], 5),
    ([0] * 3, 3),
])
def test_store_batches_are_cut_by_count_and_bytes(sizes, first):
    queue = _queue(sizes)
    batch, rest = StoreBatcher(client=None)._take("http://n1", "files", queue)
    assert len(batch) == first and batch + rest == queue


def test_store_batch_takes_one_file_even_above_the_byte_limit():
    queue = _queue([INLINE_BATCH_BYTES + 1, 1])  # never happens (files are at most 64 KiB): no stall
    batch, rest = StoreBatcher(client=None)._take("http://n1", "files", queue)
    assert len(batch) == 1 and len(rest) == 1


def _item(**kw):
    item = {"name": "/a", "version": 5, "data": b"x", "sha256": None, "size": None, "hint": None}
    item.update(kw)
    return item


def test_parse_items():
    digest = hashlib.sha256(b"x").hexdigest()
    parsed = parse_items([_item(), _item(name="/b/c", version=MAX_VERSION, sha256=digest, size=1, hint="n2")])
    (w1, d1), (w2, d2) = parsed
    assert (w1.name, w1.version, w1.sha256, w1.size, w1.hint, d1) == ("/a", 5, None, None, None, b"x")
    assert (w2.name, w2.version, w2.sha256, w2.size, w2.hint, d2) == ("/b/c", MAX_VERSION, digest, 1, "n2", b"x")
    assert parse_items([]) == []


@pytest.mark.parametrize("item,message", [
    (1, "must be a map"),
    (_item(name=None), "invalid file name"),
    (_item(name="/a@5"), "invalid file name"),
    (_item(version=True), "version"),
    (_item(version="5"), "version"),
    (_item(version=2 ** 63), "version"),
    (_item(version=253402300800), "version"),   # after year 9999: no HTTP date for it
    (_item(data=None), "msgpack bin"),
    (_item(data=b"x" * (SMALL_PUT_MAX + 1)), "at most"),
    (_item(size=True), "size"),
    (_item(size=2 ** 63), "size"),
    (_item(sha256="A" * 64), "sha256"),   # the gateway sends it lowercased
    (_item(hint=5), "hint"),
])
def test_parse_items_answers_a_malformed_file_alone(item, message):
    good, bad = parse_items([_item(), item])
    assert good[0].name == "/a" and good[1] == b"x"
    assert bad[:2] == ["error", 400] and message in bad[2], bad


@pytest.mark.parametrize("items,status", [
    ({}, 400),
    ([_item()] * (INLINE_BATCH_COUNT + 1), 400),
    ([_item(name="/n%d" % i, data=b"x" * SMALL_PUT_MAX) for i in range(5)], 413),
])
def test_parse_items_refuses_the_request(items, status):
    with pytest.raises(HTTPFail) as e:
        parse_items(items)
    assert e.value.status_code == status


def test_answer_rows():
    record = Record(name="/a", version=7, sha256="ab" * 32, size=3, deleted=False)
    assert answer_row((record, True)) == ["ok", 7, "ab" * 32, 3, False, True]
    assert answer_row((Record.tombstone("/a", 9), False))[:2] == ["ok", 9]
    assert answer_row((Record.tombstone("/a", 9), False))[4:] == [True, False]
    assert answer_row(ChecksumMismatch("bad sum")) == ["error", 400, "bad sum"]
    assert answer_row(SizeMismatch("bad size")) == ["error", 400, "bad size"]
    assert answer_row(StoreFull("full")) == ["error", 507, "full"]
    assert answer_row(OSError(5, "I/O error")) == ["error", 500, "OSError: [Errno 5] I/O error"]


# ---- StoreBatcher against a scripted node client ------------------------------------------------

class ScriptedClient:
    """Answers ``POST /_cluster/store`` with ``answer(items)`` -> ``(code, body)``, after ``gate``
    (an asyncio.Event, when given) is set; records the batches and plain PUTs it saw."""

    def __init__(self, answer, gate=None):
        self.answer = answer
        self.gate = gate
        self.batches = []
        self.singles = []
        self.timeouts = []

    async def request(self, url, method, path, body=None, headers=None, **kwargs):
        from cluster.gateway.nodes import NodeReply

        if method == "PUT":
            self.singles.append(path)
            return NodeReply(url, 200, {"X-Version": "5", "X-Sha256": "ab" * 32, "X-Size": "1",
                                        "X-Deleted": "0"}, b"")
        items = msgpack.unpackb(body, raw=False)
        self.batches.append([i["name"] for i in items])
        self.timeouts.append(kwargs.get("timeout"))
        if self.gate is not None:
            await self.gate.wait()
        code, payload = self.answer(items)
        return NodeReply(url, code, {}, payload, error=None if code else "connection refused")


def _ok_rows(items):
    return 200, msgpack.packb([["ok", i["version"], "ab" * 32, len(i["data"]), False, True] for i in items])


def _run(client, names, size=1):
    async def go():
        batcher = StoreBatcher(client)
        futs = [batcher.put("http://n1", _item(name=n, data=b"x" * size)) for n in names]
        return await asyncio.wait_for(asyncio.gather(*futs), 10)

    return asyncio.run(go())


def test_batcher_sends_what_waits_in_one_request_and_decodes_rows():
    client = ScriptedClient(_ok_rows)
    got = _run(client, ["/a", "/b", "/c"])
    assert [(s.code, s.record.name, s.record.version) for s in got] == [(200, "/a", 5), (200, "/b", 5), (200, "/c", 5)]
    assert client.batches == [["/a", "/b", "/c"]]  # asked in one go: one request


@pytest.mark.parametrize("answer,code", [
    (lambda items: (200, msgpack.packb([{"not": "a row"}] * len(items))), 502),   # rows of the wrong shape
    (lambda items: (200, msgpack.packb([["ok"]] * len(items))), 502),
    (lambda items: (200, b"\xc1"), 502),                                           # not msgpack
    (lambda items: (200, msgpack.packb([])), 502),                                 # too few rows
    (lambda items: (500, b""), 500),
    (lambda items: 1 / 0, 502),                                                    # _send itself raises
])
def test_batcher_never_leaves_a_writer_waiting(answer, code):
    got = _run(ScriptedClient(answer), ["/a", "/b", "/c"])
    assert [s.code for s in got] == [code] * 3 and all(s.record is None for s in got)


def test_batcher_fails_everything_queued_for_an_unreachable_node_at_once():
    async def go():
        gate = asyncio.Event()
        client = ScriptedClient(lambda items: (None, b""), gate)
        batcher = StoreBatcher(client)
        futs = [batcher.put("http://n1", _item(name="/f%d" % i)) for i in range(100)]
        await asyncio.sleep(0)
        gate.set()
        got = await asyncio.wait_for(asyncio.gather(*futs), 10)
        return got, client.batches

    got, batches = asyncio.run(go())
    assert {s.code for s in got} == {None}
    assert len(batches) == 1  # one failed request, not one per batch of 64


def test_batcher_refuses_beyond_its_queue_bound():
    from cluster.gateway.smallput import MAX_QUEUED_BYTES

    async def go():
        gate = asyncio.Event()
        batcher = StoreBatcher(ScriptedClient(_ok_rows, gate))
        first = batcher.put("http://n1", _item(name="/first"))      # in flight, held at the gate
        await asyncio.sleep(0)
        count = MAX_QUEUED_BYTES // SMALL_PUT_MAX
        queued = [batcher.put("http://n1", _item(name="/q%d" % i, data=b"q" * SMALL_PUT_MAX))
                  for i in range(count + 1)]
        refused = queued[-1]
        assert refused.done() and refused.result().code == 503
        gate.set()
        got = await asyncio.wait_for(asyncio.gather(first, *queued[:-1]), 10)
        # drained: there is room again
        again = await asyncio.wait_for(batcher.put("http://n1", _item(name="/again")), 10)
        return got, again

    got, again = asyncio.run(go())
    assert {s.code for s in got} == {200} and again.code == 200


def test_batcher_puts_files_one_by_one_to_a_node_without_the_endpoint():
    client = ScriptedClient(lambda items: (404, b""))
    got = _run(client, ["/a", "/b", "/c"])
    assert [s.code for s in got] == [200, 200, 200]
    assert len(client.batches) == 1 and sorted(client.singles) == \
        ["/_cluster/files/a?version=5", "/_cluster/files/b?version=5", "/_cluster/files/c?version=5"]


def test_batcher_asks_an_old_node_for_the_endpoint_again_later(monkeypatch):
    import cluster.gateway.lookups as lookups

    client = ScriptedClient(lambda items: (404, b""))

    async def go():
        batcher = StoreBatcher(client)
        await batcher.put("http://n1", _item(name="/a"))
        assert batcher.lacks_endpoint("http://n1")
        await batcher.put("http://n1", _item(name="/b"))           # straight to a plain PUT
        monkeypatch.setattr(lookups, "RETRY_ENDPOINT_AFTER", 0.0)  # a minute later
        client.answer = _ok_rows                                   # upgraded meanwhile
        answer = await batcher.put("http://n1", _item(name="/c"))
        return answer, batcher.lacks_endpoint("http://n1")

    answer, lacks = asyncio.run(go())
    assert answer.code == 200 and not lacks
    assert client.batches == [["/a"], ["/c"]] and len(client.singles) == 2


def test_batch_timeout_grows_with_its_files():
    from cluster.gateway.smallput import SECONDS_PER_FILE

    client = ScriptedClient(_ok_rows)

    async def go():
        batcher = StoreBatcher(client, timeout=5.0)
        await asyncio.gather(*[batcher.put("http://n1", _item(name="/t%d" % i)) for i in range(10)])

    asyncio.run(go())
    assert client.timeouts == [pytest.approx(5.0 + 10 * SECONDS_PER_FILE)]
    assert StoreBatcher(client).queued_bytes() == 0
