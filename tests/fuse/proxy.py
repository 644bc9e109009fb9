"""A TCP relay that counts the bytes a server sends and the requests it gets:
what a mount really asked for and transferred."""

import re
import socket
import threading

_REQUEST_LINE = re.compile(rb"(GET|HEAD|PUT|DELETE|POST) (\S+) HTTP/1\.[01]\r\n")


class CountingProxy:
    """Listen on 127.0.0.1:<port>, relay to ``target`` (host, port), count bytes downstream."""

    def __init__(self, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.downstream_bytes = 0
        #: ``(method, target)`` of every request seen going upstream (bytes).
        self.requests = []
        self._lock = threading.Lock()
        self._closed = False
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src, dst, count):
        carry = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    with self._lock:
                        self.downstream_bytes += len(data)
                else:
                    # Request lines, also when split across reads (bodies could
                    # in theory contain one: good enough for the small tests here).
                    text = carry + data
                    last = 0
                    for m in _REQUEST_LINE.finditer(text):
                        with self._lock:
                            self.requests.append((m.group(1).decode(), m.group(2).decode()))
                        last = m.end()
                    carry = text[max(last, len(text) - 2048):]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._closed = True
        self.sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
