"""A TCP proxy on loopback that delays what a server sends back: a slow-but-alive node.

``DelayProxy(target_port).start()`` listens on a free port of 127.0.0.1 and
forwards every connection to ``127.0.0.1:target_port``.  Each piece the target
sends back waits :attr:`delay` seconds (settable while it runs) before it is
passed on, so every answer is late by about that much while connections stay
up.  :meth:`count` tells how many requests starting with a given line prefix
clients sent (e.g. ``b"POST /_cluster/fetch "``).  It runs its own event loop
in a daemon thread; :meth:`stop` closes everything.
"""

import asyncio
import threading

from tests.support.procs import free_port


class DelayProxy:
    def __init__(self, target_port):
        self.target_port = target_port
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.delay = 0.0
        self._seen = bytearray()   # what clients sent, for count() (tests send little)
        self._lock = threading.Lock()
        self._loop = None
        self._server = None
        self._thread = None

    def start(self):
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self.port))
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("delay proxy did not start")
        return self

    def count(self, prefix):
        """How often clients sent ``prefix`` (bytes, a request line's start such as
        ``b"POST /_cluster/fetch "``) since the start or :meth:`reset_counts`."""
        with self._lock:
            return bytes(self._seen).count(prefix)

    def reset_counts(self):
        with self._lock:
            self._seen.clear()

    def stop(self):
        if self._loop is None:
            return

        def close():
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_soon(self._loop.stop)

        self._loop.call_soon_threadsafe(close)
        self._thread.join(10)

    async def _serve(self, client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        up = asyncio.ensure_future(self._pump(client_reader, server_writer, record=True))
        down = asyncio.ensure_future(self._pump(server_reader, client_writer, record=False))
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            for writer in (client_writer, server_writer):
                writer.close()

    async def _pump(self, reader, writer, record):
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if record:
                with self._lock:
                    self._seen += data   # whole, so a request line cut in two still counts
            elif self.delay:
                await asyncio.sleep(self.delay)
            writer.write(data)
            await writer.drain()
