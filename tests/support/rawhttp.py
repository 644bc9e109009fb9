"""Raw HTTP on a socket, for requests no client library sends as they are (a head without
its body, a body sent in parts)."""

import signal
import socket
import time
from urllib.parse import urlsplit


def status_line(sock):
    """The status line of the next answer on ``sock`` (str; "" when the connection closes first)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


#: a ``last_modified`` query value (an HTTP date, percent-encoded) for raw uploads
LAST_MODIFIED = "Tue%2C%2014%20Nov%202023%2022%3A13%3A20%20GMT"


def upload_head(url, name, length):
    """A socket to ``url`` (``http://host:port``) that has sent the head of a PUT of ``name``
    with a body of ``length`` bytes, and none of the body."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    sock.sendall(b"PUT /files%s?last_modified=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % (name.encode(), LAST_MODIFIED.encode(), length))
    return sock


def stop_with_an_upload_stuck(service, url, name):
    """SIGTERM ``service`` (a tests.support.procs.Service) while an upload to it has sent half
    its body and never sends the rest; asserts it exits 0 within 20 s."""
    sock = upload_head(url, name, 20)
    try:
        sock.sendall(b"0123456789")   # and never the rest
        time.sleep(0.3)
        started = time.monotonic()
        service.signal(signal.SIGTERM)
        assert service.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 20
    finally:
        sock.close()
