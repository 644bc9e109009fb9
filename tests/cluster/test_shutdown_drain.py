"""SIGTERM of a gateway or a node lets the requests in progress end (at most SHUTDOWN_GRACE,
5 s), then closes the connections and exits, as the single server does.  Before, both closed
every connection at once: a rolling restart cut uploads and downloads short.  Real processes;
each test failed on the code before."""

import signal
import threading
import time

import requests

from tests.support.rawhttp import status_line, stop_with_an_upload_stuck, upload_head


def _finish_upload_across_a_stop(service, url, name):
    """Half a body, SIGTERM of ``service``, the other half: the status line of the answer."""
    sock = upload_head(url, name, 20)
    try:
        sock.sendall(b"0123456789")
        time.sleep(0.3)   # the request is in progress (its handler has the first half)
        service.signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(b"abcdefghij")
        return status_line(sock)
    finally:
        sock.close()


def test_a_gateway_lets_an_upload_in_progress_end(cluster_factory):
    c = cluster_factory(gateway=True)
    assert _finish_upload_across_a_stop(c.gateway, c.gateway_url, "/drain/gw") == "HTTP/1.1 200 OK"
    assert c.gateway.proc.wait(timeout=15) == 0
    assert [c.content(i, "/drain/gw") for i in range(3)] == [b"0123456789abcdefghij"] * 3


def test_a_node_lets_an_upload_in_progress_end(cluster_factory):
    c = cluster_factory(nodes=1, replicas=1, node_args=["--allow-public-writes"])
    assert _finish_upload_across_a_stop(c.services[0], c.urls[0], "/drain/node") == "HTTP/1.1 200 OK"
    assert c.services[0].proc.wait(timeout=15) == 0
    c.restart(0)
    assert c.content(0, "/drain/node") == b"0123456789abcdefghij"


def test_a_gateway_lets_a_fast_path_read_waiting_for_its_nodes_end(cluster_factory):
    """A plain GET is answered by the gateway's front (outside the handlers); one waiting for
    its nodes (here stopped with SIGSTOP) counts as in progress too."""
    c = cluster_factory(gateway=True)
    url = c.gateway_url + "/files/drain/read"
    assert requests.put(url, params={"last_modified": "Tue, 14 Nov 2023 22:13:20 GMT"}, data=b"read me", timeout=10).status_code == 200
    got = {}

    def read():
        try:
            got["r"] = requests.get(url, timeout=20)
        except requests.RequestException as e:
            got["error"] = e

    for i in range(3):
        c.pause(i)
    try:
        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.5)   # the front has the request and waits for the nodes
        c.gateway.signal(signal.SIGTERM)
        time.sleep(0.5)
    finally:
        for i in range(3):
            c.resume(i)
    reader.join(timeout=30)
    assert "error" not in got, got
    assert got["r"].status_code == 200 and got["r"].content == b"read me"
    assert c.gateway.proc.wait(timeout=15) == 0


def test_a_stopping_gateway_gives_up_on_an_upload_that_does_not_end(cluster_factory):
    c = cluster_factory(gateway=True)
    stop_with_an_upload_stuck(c.gateway, c.gateway_url, "/drain/stuck")
    assert "1 requests did not finish within 5.0s" in open(c.gateway.log_path).read()
