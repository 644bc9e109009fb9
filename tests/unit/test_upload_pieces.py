"""``cluster.gateway.upload.pieces``: how bodies not read by Tornado are sliced for the upload queues."""

from cluster.gateway.upload import pieces
from filetracker.server.app import BODY_CHUNK


def test_small_data_is_passed_as_it_is():
    data = b"x" * BODY_CHUNK
    assert [p is data for p in pieces(data)] == [True]
    assert list(pieces(b"")) == [b""]


def test_large_data_is_sliced_in_order():
    data = bytes(range(256)) * 40  # 10,240 bytes
    got = list(pieces(data, size=4096))
    assert [len(p) for p in got] == [4096, 4096, 2048]
    assert b"".join(got) == data
    assert [len(p) for p in pieces(b"\0" * (1 << 20))] == [BODY_CHUNK] * 4
