"""Pure parts of batched small PUTs: which bodies the gateway batches, how a node's queue is cut
into requests, and the node's parsing and answer rows (cluster/gateway/smallput.py,
cluster/node/writebatch.py)."""

import gzip
import hashlib

import pytest

from cluster.gateway.smallput import SMALL_PUT_MAX, StoreBatcher, announced_length, small_body
from cluster.node.writebatch import answer_row, parse_items
from cluster.peers import INLINE_BATCH_BYTES, INLINE_BATCH_COUNT
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
def test_announced_length(headers, expected):
    assert announced_length(headers) == expected


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
])
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
    batch, rest = StoreBatcher(client=None)._take("files", queue)
    assert len(batch) == first and batch + rest == queue


def test_store_batch_takes_one_file_even_above_the_byte_limit():
    queue = _queue([INLINE_BATCH_BYTES + 1, 1])  # never happens (files are at most 64 KiB): no stall
    batch, rest = StoreBatcher(client=None)._take("files", queue)
    assert len(batch) == 1 and len(rest) == 1


def _item(**kw):
    item = {"name": "/a", "version": 5, "data": b"x", "sha256": None, "size": None, "hint": None}
    item.update(kw)
    return item


def test_parse_items():
    digest = hashlib.sha256(b"x").hexdigest()
    parsed = parse_items([_item(), _item(name="/b/c", version=2 ** 63 - 1, sha256=digest, size=1, hint="n2")])
    (w1, d1), (w2, d2) = parsed
    assert (w1.name, w1.version, w1.sha256, w1.size, w1.hint, d1) == ("/a", 5, None, None, None, b"x")
    assert (w2.name, w2.version, w2.sha256, w2.size, w2.hint, d2) == ("/b/c", 2 ** 63 - 1, digest, 1, "n2", b"x")
    assert parse_items([]) == []


@pytest.mark.parametrize("items,status", [
    ({}, 400),
    ([1], 400),
    ([_item(name=None)], 400),
    ([_item(version=True)], 400),
    ([_item(version="5")], 400),
    ([_item(data=None)], 400),
    ([_item(size=True)], 400),
    ([_item(sha256="A" * 64)], 400),   # the gateway sends it lowercased
    ([_item()] * (INLINE_BATCH_COUNT + 1), 400),
    ([_item(name="/n%d" % i, data=b"x" * SMALL_PUT_MAX) for i in range(5)], 413),
])
def test_parse_items_refuses(items, status):
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
