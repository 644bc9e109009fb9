"""The admin does not wait again for a node that just timed out (cluster/admin/access.py):
`filetracker-admin status` asked a frozen node for its ring, its leaving-members document and
its status one after the other, a whole timeout each (31 s with the default 10 s)."""

import socket
import threading
import time

import pytest

from cluster.admin.access import SilenceAwareClient
from cluster.peers import PeerError


@pytest.fixture
def frozen_node():
    """A listener that accepts connections and never answers (as a node stopped by SIGSTOP,
    whose kernel still completes the handshakes); ``accepted`` counts the connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.getsockname()[1], held
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_node_that_timed_out_fails_at_once_until_its_timeout_has_passed(frozen_node):
    url, accepted = frozen_node
    client = SilenceAwareClient(timeout=0.3, connect_timeout=0.3)
    with pytest.raises(PeerError) as first:
        client.status(url)
    assert "timed out" in str(first.value) and len(accepted) == 1
    for ask in (client.get_ring, client.status, client.digests):
        with pytest.raises(PeerError) as again:
            ask(url)
        assert again.value is first.value
    assert len(accepted) == 1          # not asked again
    time.sleep(0.4)                    # its timeout has passed
    with pytest.raises(PeerError):
        client.status(url)
    assert len(accepted) == 2          # asked again: a command waiting for it sees it come back
    client.close()


def test_a_refused_connection_is_not_remembered():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % s.getsockname()[1]   # bound, not listening: refused
        client = SilenceAwareClient(timeout=0.3, connect_timeout=0.3)
        errors = []
        for _ in range(2):
            with pytest.raises(PeerError) as e:
                client.status(url)
            errors.append(e.value)
        assert errors[0] is not errors[1]
        client.close()
