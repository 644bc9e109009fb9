"""The gateway's node connection when the transport refuses a write (uvloop raises RuntimeError on a
transport that closed before ``connection_lost`` reached the protocol, e.g. a node killed just now):
the exchange fails with ConnectionFailed, which the pool retries on a new connection, instead of a
RuntimeError that failed a whole batch of lookups (seen once in a soak with node kills)."""

import asyncio

import pytest

from cluster.gateway.pool import ConnectionFailed, _Conn


class ClosedTransport:
    def write(self, data):
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    def close(self):
        pass


def test_a_refused_write_is_a_failed_exchange():
    async def main():
        conn = _Conn()
        conn.connection_made(ClosedTransport())
        fut = conn.send(b"GET /version/ HTTP/1.1\r\n\r\n", head_only=False)
        with pytest.raises(ConnectionFailed, match="connection closed: unable to perform operation"):
            await fut
        assert conn.closed and not conn.got_bytes   # not reused; retried once on a new one
    asyncio.run(main())
