"""Sending a byte range of a file on a Tornado response with ``os.sendfile``.

Why: a large GET through the read/write loop costs one executor hop, one
buffer the size of a chunk and two copies per chunk (page cache -> Python
bytes -> socket).  ``sendfile`` moves the bytes from the page cache to the
socket inside the kernel.  Measured: a node's CPU per 256 MiB read by a
gateway in 4 MiB ranges went from 260-320 ms (256 KiB reads) to 150-170 ms.

How it stays safe beside Tornado, which owns the socket:

* the response headers are flushed first, through Tornado (the caller does
  that), and nothing else is written through Tornado until the range is sent;
* ``sendfile`` runs on the executor (a cold file would block the event loop
  on the disk) against a *duplicate* of the socket's descriptor: if Tornado
  closes its socket meanwhile (the client went away), the descriptor number
  we use cannot be reused by another connection, and the copy just fails
  with a broken pipe.  The duplicates (the file's too) are closed only when
  no job uses them (:class:`_Dup`), even when the sending task is cancelled
  mid-job;
* when the socket's send buffer is full the loop waits for it to become
  writable (on the duplicate, so Tornado's own registration of the socket is
  untouched); a client that receives nothing for ``idle_timeout`` seconds has
  its connection closed, like :meth:`GuardedRequest.bounded_flush`;
* Tornado counts the bytes written against ``Content-Length``; the bytes sent
  here are deducted from that count (``_expected_content_remaining``, a
  private attribute of ``HTTP1Connection``).  :func:`usable` checks for it,
  and for a plain (not TLS) socket, so any other setup keeps the copy loop.
"""

import asyncio
import os
import threading

from tornado.iostream import IOStream, SSLIOStream

from filetracker.server.guard import unsent as _unsent
from filetracker.server.observe import count_sent

#: most bytes one executor job sends before handing back to the event loop
BYTES_PER_JOB = 8 << 20
#: a response shorter than this is not worth a duplicate descriptor and a hop
MIN_BYTES = 64 << 10


def usable(handler, length):
    """True when the next ``length`` bytes of this response can go out through
    :func:`send_range`: call it after the headers were flushed."""
    if length < MIN_BYTES or not hasattr(os, "sendfile"):
        return False
    conn = handler.request.connection
    stream = getattr(conn, "stream", None)
    return (isinstance(stream, IOStream) and not isinstance(stream, SSLIOStream)
            and not stream.closed()
            # a Content-Length body (not chunked), counted by Tornado as we expect
            and getattr(conn, "_chunking_output", True) is False
            and isinstance(getattr(conn, "_expected_content_remaining", None), int))


def _send_some(out_fd, in_fd, offset, count):
    """Blocking (executor): ``sendfile`` until ``count`` bytes are sent or the socket is full.

    Returns ``(sent, full)``; ``full`` is true when the socket took no more
    for now.  Raises ``EOFError`` when the file ends before ``count`` bytes.
    """
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(out_fd, in_fd, offset + sent, count - sent)
        except BlockingIOError:
            return sent, True
        if n == 0:
            raise EOFError("file ended at byte %d, %d bytes early" % (offset + sent, count - sent))
        sent += n
    return sent, False


async def _writable(fd, timeout):
    """Wait until ``fd`` can take more bytes.

    Raises ``TimeoutError`` when the peer received nothing for ``timeout``
    seconds (None: no limit).  Progress is the socket's send queue shrinking
    (nothing is written while this waits), so a slow reader that keeps
    reading is never cut, only one that stopped.
    """
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    timer = None

    def check(queued):
        nonlocal timer
        if ready.done():
            return
        try:
            now = _unsent(fd)
        except OSError as exc:
            ready.set_exception(exc)
            return
        if now < queued:
            timer = loop.call_later(timeout, check, now)
        else:
            ready.set_exception(TimeoutError("the client received nothing for %gs" % timeout))

    if timeout:
        timer = loop.call_later(timeout, check, _unsent(fd))
    try:
        await ready
    finally:
        loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()


class _Dup:
    """Duplicates of the socket's and the file's descriptors, closed once :meth:`close` was
    called *and* no job uses them.

    A job on the executor keeps running when the task awaiting it is
    cancelled; closing a descriptor under it would let its number be reused
    by another connection or file, which would then get (or give) the bytes.
    """

    def __init__(self, sock_fd, file_fd):
        self.out_fd = os.dup(sock_fd)
        try:
            self.in_fd = os.dup(file_fd)
        except OSError:
            os.close(self.out_fd)
            raise
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

    def use(self):
        with self._lock:
            self._users += 1

    def done(self):
        with self._lock:
            self._users -= 1
            last = self._closed and not self._users
        if last:
            self._release()

    def close(self):
        with self._lock:
            self._closed = True
            last = not self._users
        if last:
            self._release()

    def _release(self):
        os.close(self.out_fd)
        os.close(self.in_fd)


def _job(dup, started, offset, count):
    started.append(True)
    try:
        return _send_some(dup.out_fd, dup.in_fd, offset, count)
    finally:
        dup.done()


async def send_range(handler, run, f, start, end, idle_timeout):
    """Send bytes ``[start, end)`` of the open file ``f`` as (the rest of) the response body.

    Call only when :func:`usable` said so, after everything written before
    (headers, a first chunk) was flushed.
    ``run(fn, *args)`` runs blocking calls in the executor.  Returns None when
    nothing was sent (no descriptor to spare: use the copy loop), False when
    the client went away or stalled (the connection is then closed), True
    when every byte was handed to the kernel.  Raises ``OSError`` when the
    file is shorter than ``end`` or cannot be read (the connection is closed:
    the client must not take a short body for a whole one).
    """
    conn = handler.request.connection
    try:
        dup = _Dup(conn.stream.socket.fileno(), f.fileno())
    except OSError:  # EMFILE: out of descriptors
        return None
    offset = start
    try:
        while offset < end:
            if conn.stream.closed():  # the client went away, or the server is shutting down
                return False
            dup.use()  # released by the job itself when it ends, even if this task is cancelled
            started = []
            try:
                sent, full = await run(_job, dup, started, offset, min(end - offset, BYTES_PER_JOB))
            except Exception:
                if not started:  # never ran (the executor is shut down): nobody else releases it
                    dup.done()
                raise
            offset += sent
            if full:
                await _writable(dup.out_fd, idle_timeout)
    except (ConnectionError, TimeoutError):
        conn.stream.close()
        return False
    except EOFError as exc:
        conn.stream.close()
        raise OSError("blob shorter than its record: %s" % exc) from None
    except OSError:
        conn.stream.close()
        raise
    finally:
        dup.close()
        # Tornado checks the body against Content-Length at finish()
        conn._expected_content_remaining -= offset - start
        count_sent(handler.request, offset - start)  # /metrics and the access line
    return True
