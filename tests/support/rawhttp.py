"""Raw HTTP on a socket, for requests no client library sends as they are (a head without
its body, a body sent in parts)."""


def status_line(sock):
    """The status line of the next answer on ``sock`` (str; "" when the connection closes first)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")
