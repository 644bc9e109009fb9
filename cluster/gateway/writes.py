"""Writes through the gateway: streamed PUT fan-out and quorum DELETE.

Both send to the targets chosen by :class:`TargetPicker` and succeed once
``W`` nodes stored the change (W capped at the number of owners).  Answers
that come after the quorum are collected in the background.
"""

import asyncio
import logging

from cluster.gateway.nodes import quote_name, record_from_headers
from cluster.gateway.targets import TargetPicker
from cluster.gateway.upload import END_OF_BODY, EXPECT_MIN_BYTES, ReplicaUpload, pieces
from cluster.peers import DECODED_LIMIT_HEADER
from filetracker.records import merge_all

log = logging.getLogger(__name__)

#: a node's answers that say "not now, not here": its share of the write goes to a handoff node
REFUSALS = (503, 507)
#: request headers of a client PUT that travel on to the nodes
PASSED_HEADERS = ("Content-Encoding", "Logical-Size", "SHA256-Checksum", "Content-Length")
#: A replica beyond the write quorum may hold the client's body back (its queue full while W
#: others take the body) for this many seconds in all, or for this share of the time the body has
#: taken so far if that is longer; then it is dropped (anti-entropy and read repair copy the file
#: to it later).  So a slow-but-alive node (a degraded link, a failing disk) slows an upload at
#: most about twofold, instead of to its own pace: a 32 MiB PUT took 38.8 s with one node's link
#: at 6 Mbit/s and 0.1 s without.  A node slower by less than half is never dropped.
LAG_GRACE = 2.0
LAG_SHARE = 0.5
#: a replica counts as taking the body when it is caught up, or was when a chunk last came for
#: it, or took bytes this recently: a node that froze (its socket full) must not count towards
#: the W that let another be dropped
PROGRESS_WINDOW = 1.0


class WriteOutcome:
    """The result of a quorum write, as the public handler answers it.

    ``status`` 200 with ``record`` (the winner the replicas report), or an
    error ``status`` with a one-line ``message``.  ``sent_sha256``: the SHA-256
    of the content this write carried, when known ("" otherwise): whether
    ``record`` is this upload's or another's of the same version.
    """

    def __init__(self, status, record=None, message="", headers=None, sent_sha256=""):
        self.status = status
        self.record = record
        self.message = message
        self.headers = headers or {}
        self.sent_sha256 = sent_sha256


def node_message(reason):
    """The node's own message in a failure ``reason`` of the form ``"<url>: <code> <message>"``:
    what that node (or a single server) says to a client; ``reason`` when not of that form."""
    _, sep, rest = reason.partition(": ")
    code, _, message = rest.partition(" ")
    return message if sep and code.isdigit() and message else reason


def judge(successes, failures, quorum, what, retry_after=None):
    """Turn per-node results into one outcome.

    ``successes`` are winner records reported by nodes, ``failures`` are
    ``(code or None, reason)``.  Errors every failing node agrees on win over
    the generic 503: all 507 -> 507 (every node asked, none down), all that
    answered 400 -> 400 (bad checksum), likewise 413 and 415, with the message
    of a node that said it.  The 503 carries ``Retry-After: retry_after`` when
    given (nodes refused for load).
    """
    if len(successes) >= quorum:
        return WriteOutcome(200, merge_all(successes))
    codes = {code for code, _ in failures if code is not None}
    reasons = "; ".join(r for _, r in failures[:3])
    # "full" only when every node asked is full: with one down as well, the write may succeed
    # once it is back (a 503), while 400/413/415 are about the request itself, whoever else failed
    if codes == {507} and all(code is not None for code, _ in failures):
        return WriteOutcome(507, message="no space left on the replicas")
    if len(codes) == 1 and codes <= {400, 413, 415}:  # the body itself (checksum, too large, encoding)
        code = codes.pop()
        said = next(reason for c, reason in failures if c == code)
        return WriteOutcome(code, message=node_message(said) or "bad request")
    return WriteOutcome(503, message="not enough replicas: %d of %d stored the %s (%s)"
                        % (len(successes), quorum, what, reasons or "no node available"),
                        headers={"Retry-After": retry_after} if retry_after else None)


class PutFanout:
    """Streams one client upload to N nodes at once.

    ``await open()`` (before the body is read), ``await feed(chunk)`` for each
    body chunk, ``await finish()`` -> :class:`WriteOutcome`.
    """

    def __init__(self, services, name, version, request_headers):
        self._s = services
        self.name = name
        self.version = version
        self._headers = {h: request_headers[h] for h in PASSED_HEADERS if h in request_headers}
        if "Content-Length" in self._headers and "Transfer-Encoding" in request_headers:
            del self._headers["Content-Length"]
        self._headers.update(services.client.headers())
        if "Content-Encoding" in self._headers and services.config.max_body_size is not None:
            # the nodes decode the body: they hold it to this gateway's limit too
            self._headers[DECODED_LIMIT_HEADER] = str(services.config.max_body_size)
        self._picker = TargetPicker(services.view, services.view.placement(name))
        self._quorum = min(services.config.write_quorum, len(services.view.placement(name).owners))
        self.uploads = []
        self._began = None      # loop time of the first body bytes
        self._failures = []
        self._retry_after = []  # Retry-After values of nodes that refused with 503
        # A small body is sent without asking first (no Expect round trip), so a node refuses it
        # only after it went out: keep a copy to send it again to a handoff node then.
        length = self._headers.get("Content-Length")
        small = length is not None and length.isdigit() and int(length) <= EXPECT_MIN_BYTES
        self._copy = [] if small else None

    @property
    def quorum(self):
        return self._quorum

    async def open(self):
        """Connect to the targets (replacing refusing ones); False when fewer than W connect.

        A target that has not said ``100 Continue`` after ``upload.CONTINUE_WAIT`` still gets
        the body (it may be slow, not gone), but when fewer than W others said it, handoff
        nodes are added beside it until W did (with a hint for it): a frozen owner cannot
        make the write fail when a handoff node could have taken it, as a small body's batch
        does, and the write is not kept waiting for it.
        """
        opened = await asyncio.gather(*(self._open_one(n, h) for n, h in self._picker.initial(self._quorum)))
        self.uploads = [u for u in opened if u is not None]
        silent = [u for u in self.uploads if u.silent]
        missing = self._quorum - (len(self.uploads) - len(silent))
        if silent and missing > 0:
            stand_ins = []
            for up in silent:
                if len(stand_ins) >= missing:
                    break
                sub = self._picker.replacement(TargetPicker.hint_after_failure(up.node, up.hint_for))
                if sub is None:
                    break
                stand_ins.append(sub)
            extra = await asyncio.gather(*(self._open_one(n, h) for n, h in stand_ins))
            self.uploads += [u for u in extra if u is not None]
        for u in self.uploads:
            u.start()
        return len(self.uploads) >= self._quorum

    async def _open_one(self, node, hint_for):
        while True:
            up = ReplicaUpload(self._s.client.pool, node, hint_for, self.name, self.version, self._headers,
                               self._s.config.timeout, self._s.view)
            try:
                await up.open()
                early = await up.early_answer()
            except Exception as exc:  # noqa: BLE001 - refused, unreachable, timed out
                # str(): a bare TimeoutError() (asyncio.wait_for) is truthy but reads as ""
                reason = str(exc) or ("no answer in %gs" % self._s.config.timeout
                                      if isinstance(exc, TimeoutError) else type(exc).__name__)
                up.abort(reason)
                self._s.view.node_failed(node.url, "PUT connect: %s" % reason)
                self._failures.append((None, "%s: %s" % (node.url, reason)))
            else:
                if early is None or early.code not in REFUSALS:
                    return up  # accepted (or an answer about the request itself: it is the result)
                # the node is up but takes no data now (disk reserve, upload bound): not marked
                # down, its share goes to a handoff node as a hint
                self._refused(up, early)
            sub = self._picker.replacement(TargetPicker.hint_after_failure(node, hint_for))
            if sub is None:
                return None
            node, hint_for = sub

    def _refused(self, up, resp):
        reason = up.reason()
        up.abort("refused: %d" % resp.code)
        self._failures.append((resp.code, reason))
        retry = resp.headers.get("Retry-After")
        if retry:
            self._retry_after.append(retry)

    async def feed(self, data):
        loop = asyncio.get_running_loop()
        if self._began is None:
            self._began = loop.time()
        for chunk in pieces(data):
            if self._copy is not None:
                self._copy.append(bytes(chunk))
            await self._deliver(chunk, loop)

    async def _deliver(self, chunk, loop):
        """Queue ``chunk`` (or the end of the body) for every replica still in."""
        # common case without a task per chunk: every queue has room
        # (one that answered already, before the end of the body, takes no more: not waited for)
        waiting = [u for u in self.uploads if not u.failed and not u.offer(chunk) and not u.answered]
        if not waiting:
            return
        if self._taking(loop.time(), exclude=waiting) < self._quorum:
            # the quorum itself waits: its pace is the client's
            if len(waiting) == 1:
                await waiting[0].feed(chunk)
            else:
                await asyncio.gather(*(u.feed(chunk) for u in waiting))
        else:   # W others take the body: these lag behind, each for a bounded time (LAG_GRACE)
            await asyncio.gather(*(self._feed_lagging(u, chunk, loop) for u in waiting))

    def _taking(self, now, exclude=()):
        """How many replicas, besides ``exclude``, are taking the body (ReplicaUpload.taking)."""
        return sum(1 for u in self.uploads if u not in exclude and u.taking(now, PROGRESS_WINDOW))

    async def _feed_lagging(self, up, chunk, loop):
        """Queue ``chunk`` for ``up``, a replica beyond the quorum, or drop it when it has held
        the body back longer than it may (see :data:`LAG_GRACE`) and W others still take the
        body; when they no longer do, wait for it as for a quorum member."""
        started = loop.time()
        allowed = max(LAG_GRACE, LAG_SHARE * (started - (self._began or started))) - up.lagged
        try:
            if allowed > 0:
                await asyncio.wait_for(up.feed(chunk), allowed)
                return
        except TimeoutError:
            pass
        finally:
            up.lagged += loop.time() - started
        if self._taking(loop.time(), exclude=(up,)) < self._quorum:
            await up.feed(chunk)   # the others stalled meanwhile: this one may be needed for W
            return
        reason = "fell behind the other replicas (held the body back %.1fs of %.1fs)" % (
            up.lagged, loop.time() - (self._began or started))
        log.warning("PUT %s: replica on %s dropped: %s; anti-entropy copies the file to it later",
                    self.name, up.node.url, reason)
        up.abort(reason)

    def abort(self):
        for u in self.uploads:
            u.abort("the client went away")

    async def finish(self):
        """End every body, wait until W nodes stored it (or all answered)."""
        await self._deliver(END_OF_BODY, asyncio.get_running_loop())   # a lagging replica: as for a chunk
        pending = {u.task for u in self.uploads}
        successes = []
        failures = []
        sent = ""
        while pending and len(successes) < self._quorum:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                up = task.result()
                if up is None:
                    continue  # a resend found no node to go to (its failures are recorded)
                if up.ok:
                    successes.append(up.record)
                    sent = sent or up.sent_sha256
                    continue
                if up.code in REFUSALS and up.resp_headers.get("Retry-After"):
                    self._retry_after.append(up.resp_headers["Retry-After"])
                failures.append((up.code, up.reason()))
                # a copy kept (a small body): a node that refused or did not answer in time is
                # replaced by a handoff node, as the batched small PUT does
                if (up.code in REFUSALS or up.code is None) and self._copy is not None:
                    sub = self._picker.replacement(TargetPicker.hint_after_failure(up.node, up.hint_for))
                    if sub is not None:
                        pending.add(asyncio.ensure_future(self._resend(*sub)))
        for task in pending:
            self._s.keep(task)  # the slower replicas finish in the background
        # self._failures: connect failures and refusals of open() and of the resends
        outcome = judge(successes, self._failures + failures, self._quorum, "file", self.retry_after())
        outcome.sent_sha256 = sent
        return outcome

    async def _resend(self, node, hint_for):
        """Send the kept copy of a small body to ``node`` (a handoff for a refusing owner)."""
        up = await self._open_one(node, hint_for)
        if up is None:
            return None
        up.start()
        for chunk in self._copy:
            if not await up.feed(chunk):
                break
        await up.end()
        return await up.task

    def open_failure(self):
        """Why :meth:`open` found fewer than W targets, as a :class:`WriteOutcome`
        (507 when every node asked is full, 503 + ``Retry-After`` when they were busy)."""
        return judge([], self._failures, self._quorum, "file", self.retry_after())

    def retry_after(self):
        """The ``Retry-After`` to pass on with a 503 (the longest of the nodes' refusals), or None."""
        return longest_retry_after(self._retry_after)


def longest_retry_after(values):
    """The longest of ``Retry-After`` values in whole seconds (others ignored), or None."""
    seconds = [int(v) for v in values if v.strip().isdigit()]
    return str(max(seconds)) if seconds else None


async def quorum_delete(services, name, version):
    """Send a tombstone ``(name, version)`` to the write targets; -> :class:`WriteOutcome`."""
    view = services.view
    placement = view.placement(name)
    picker = TargetPicker(view, placement)
    quorum = min(services.config.write_quorum, len(placement.owners))
    failures = []

    async def one(node, hint_for):
        while True:
            headers = {"X-Hint-For": hint_for} if hint_for else None
            reply = await services.client.request(
                node.url, "DELETE", "/_cluster/files%s?version=%d" % (quote_name(name), version),
                headers=headers)
            record = record_from_headers(name, reply.headers) if reply.code == 200 else None
            if record is not None:
                return record
            failures.append((reply.code, reply.reason()))
            if reply.code is not None:
                return None  # the node answered: an error of the request, not of the node
            sub = picker.replacement(TargetPicker.hint_after_failure(node, hint_for))
            if sub is None:
                return None
            node, hint_for = sub

    successes = await first_successes(services, picker, quorum, one)
    return judge(successes, failures, quorum, "delete")


async def first_successes(services, picker, quorum, one):
    """Run ``one(node, hint_for)`` for every initial target of ``picker`` at once; return the
    records they give back (None: a failure) as soon as ``quorum`` did, or all ended.  The
    slower ones finish in the background."""
    pending = {asyncio.ensure_future(one(n, h)) for n, h in picker.initial(quorum)}
    successes = []
    while pending and len(successes) < quorum:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        successes.extend(r for r in (t.result() for t in done) if r is not None)
    for task in pending:
        services.keep(task)
    return successes
