"""Streaming helpers shared by handlers: gzip decoding of uploads, blob sending."""

import zlib
from dataclasses import dataclass

from tornado.iostream import StreamClosedError

from filetracker.ranges import RangeNotSatisfiable, content_range, parse_range, unsatisfied_range
from filetracker.server import zerocopy
from filetracker.server.base import HTTPFail

#: Largest piece of decompressed output produced per step (bounds memory on gzip bombs).
MAX_INFLATE_STEP = 1 << 20


class GzipDecoder:
    """Incremental gzip decoding (``wbits=31``); concatenated members allowed.

    :meth:`feed` yields plain chunks of at most :data:`MAX_INFLATE_STEP` bytes;
    :meth:`close` checks that the stream ended on a member boundary.  Both raise
    ``ValueError`` with the reason for a corrupt stream.
    """

    def __init__(self):
        self._d = zlib.decompressobj(31)
        self._started = False

    def feed(self, data):
        while data:
            if self._d.eof:
                # A new gzip member follows the previous one.
                self._d = zlib.decompressobj(31)
            self._started = True
            try:
                out = self._d.decompress(data, MAX_INFLATE_STEP)
            except zlib.error as e:
                raise ValueError("invalid gzip body: %s" % e) from None
            if out:
                yield out
            if self._d.eof:
                data = self._d.unused_data
            else:
                data = self._d.unconsumed_tail

    def close(self):
        if not self._started:
            raise ValueError("empty gzip body")
        if not self._d.eof:
            raise ValueError("truncated gzip body")


def select_range(handler, size):
    """Apply the request's Range header: ``(status, start, end_exclusive)``.

    Sets ``Content-Range`` for 206; raises :class:`HTTPFail` 416 for an
    unsatisfiable range.  HEAD answers always describe the whole body.
    """
    if handler.request.method == "HEAD":
        return 200, 0, size
    try:
        rng = parse_range(handler.request.headers.get("Range"), size)
    except RangeNotSatisfiable as e:
        raise HTTPFail(416, str(e), headers={"Content-Range": unsatisfied_range(size)})
    if rng is None:
        return 200, 0, size
    start, end = rng
    handler.set_header("Content-Range", content_range(start, end, size))
    return 206, start, end + 1


@dataclass
class ReadPlan:
    """What :func:`open_for_read` found: the record, the open blob, the byte
    range ``[start, end)`` to send (status 200 or 206) and its first chunk.
    ``unsatisfiable`` is set (and ``f`` is None) for a Range that selects nothing.
    """

    record: object
    f: object
    status: int = 200
    start: int = 0
    end: int = 0
    first: bytes = b""
    unsatisfiable: RangeNotSatisfiable | None = None


def open_for_read(store, name, range_header=None, want_body=True, chunk_size=256 * 1024):
    """Blocking (run it in the executor): open the live record of ``name``,
    apply ``range_header`` and read the first chunk, all in one executor hop.

    Returns None when there is no live record.  A small file is then sent
    without any further disk call.
    """
    found = store.open_record(name)
    if found is None:
        return None
    record, f = found
    check = getattr(store, "check_blob", None)
    if check is not None and want_body:
        # hook: a cluster node hashes the blob before serving it (cluster/node/protect.py)
        try:
            check(record.sha256, f)
        except BaseException:
            f.close()
            raise
    try:
        rng = parse_range(range_header, record.size) if want_body else None
    except RangeNotSatisfiable as e:
        f.close()
        return ReadPlan(record, None, unsatisfiable=e)
    plan = ReadPlan(record, f, end=record.size)
    if rng is not None:
        plan.status, plan.start, plan.end = 206, rng[0], rng[1] + 1
    if want_body and plan.end > plan.start:
        if plan.start:
            f.seek(plan.start)
        plan.first = f.read(min(chunk_size, plan.end - plan.start))
    if not want_body or plan.start + len(plan.first) >= plan.end:
        f.close()
        plan.f = None
    return plan


async def send_file(handler, run, f, start, end, chunk_size, seek=True):
    """Send bytes ``[start, end)`` of the open file ``f``, then close it.

    With ``seek=False`` the file is assumed to be positioned at ``start``.

    ``run(fn, *args)`` runs blocking calls in the executor.  On a plain
    socket the bytes go out with ``sendfile`` (:mod:`filetracker.server.zerocopy`);
    otherwise each chunk is flushed before the next is read, so memory stays
    at one chunk per request.  A client that goes away ends the send quietly.
    """
    try:
        try:
            await handler.flush()  # the headers (and anything written before) go first
        except StreamClosedError:
            return
        if zerocopy.usable(handler, end - start):
            sent = await zerocopy.send_range(handler, run, f, start, end, _send_timeout(handler))
            if sent is not None:
                return
        if seek and start:
            await run(f.seek, start)
        remaining = end - start
        while remaining > 0:
            data = await run(f.read, min(chunk_size, remaining))
            if not data:
                raise OSError("blob shorter than its record")
            remaining -= len(data)
            handler.write(data)
            try:
                await handler.flush()
            except StreamClosedError:
                return
    finally:
        f.close()


def _send_timeout(handler):
    """Seconds a client may take no bytes before its connection is closed (None: no limit)."""
    guarded = getattr(handler, "_guarded", None)
    return guarded.guard.limits.send_timeout if guarded is not None else None
