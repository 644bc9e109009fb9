"""HTTP exchanges with storage nodes over the internal ``/_cluster/`` API.

One pooled keep-alive client (:mod:`cluster.gateway.pool`: a request to a
node costs no TCP handshake and little CPU) serves every small exchange:
record lookups, deletes, record lists, range reads.  Streaming
uploads to nodes do not go through here (see :mod:`cluster.gateway.upload`).

Every answer is reported to an *observer* so the cluster view can notice a
newer ring epoch (``X-Ring-Epoch``) or a node that refused or timed out.
"""

import logging
from urllib.parse import quote, urlsplit

from cluster.gateway.pool import ConnectionFailed, NodePool, build_request
from filetracker.records import Record

log = logging.getLogger(__name__)

#: header carrying the shared cluster secret on every internal request
SECRET_HEADER = "X-Cluster-Secret"
EPOCH_HEADER = "X-Ring-Epoch"


def quote_name(name):
    """URL path form of a file name (UTF-8, ``/`` kept)."""
    return quote(name, safe="/")


def record_from_headers(name, headers):
    """The record of a *record header set*, or None when the node sent none."""
    version = headers.get("X-Version")
    if version is None or version == "":
        return None
    return Record(name=name, version=int(version), sha256=headers.get("X-Sha256", "") or "",
                  size=int(headers.get("X-Size") or 0), deleted=headers.get("X-Deleted", "0") == "1")


class NodeReply:
    """One node's answer: ``code`` is None when no answer arrived (refused, timeout);
    ``first_byte_at`` is the ``time.monotonic()`` its first byte arrived (0.0: unknown)."""

    __slots__ = ("url", "code", "headers", "body", "error", "first_byte_at")

    def __init__(self, url, code, headers, body, error=None, first_byte_at=0.0):
        self.url = url
        self.code = code
        self.headers = headers
        self.body = body
        self.error = error
        self.first_byte_at = first_byte_at

    @property
    def ok(self):
        return self.code is not None and 200 <= self.code < 300

    def reason(self):
        """A one-line explanation for logs and error messages."""
        if self.code is None:
            return "%s: %s" % (self.url, self.error)
        return "%s: %d %s" % (self.url, self.code, self.headers.get("X-Exception", ""))


class NodeClient:
    """Pooled requests to nodes.  ``observer`` gets ``node_failed(url)`` and
    ``epoch_seen(epoch, url)`` for every exchange, and ``secret_refused(url, what)``
    for a 403 of the internal API (the node refused the cluster secret)."""

    def __init__(self, config, observer):
        self._config = config
        self._observer = observer
        self._pool = NodePool()
        self._addresses = {}  # url -> (host, port, netloc)

    @property
    def pool(self):
        """The keep-alive connections (streamed uploads take theirs from it too)."""
        return self._pool

    def close(self):
        self._pool.close()

    def _address(self, url):
        addr = self._addresses.get(url)
        if addr is None:
            parts = urlsplit(url)
            addr = (parts.hostname, parts.port or 80, parts.netloc)
            self._addresses[url] = addr
        return addr

    def headers(self, extra=None):
        """Headers every internal request carries (the cluster secret)."""
        h = {}
        if self._config.cluster_secret:
            h[SECRET_HEADER] = self._config.cluster_secret
        if extra:
            h.update(extra)
        return h

    async def request(self, url, method, path, body=None, headers=None, timeout=None,
                      streaming_callback=None, observe=True, stream=False):
        """Send one request to the node at ``url``; never raises for network errors.

        With ``observe`` false a failure is not reported (the liveness probe
        itself uses that).  With ``stream`` (a GET) the body of a 2xx answer
        is a :class:`~cluster.gateway.pool.BodyStream`, handed over once the
        headers arrived (the caller takes it to its end or closes it); any
        other answer is whole.
        """
        timeout = self._config.timeout if timeout is None else timeout
        host, port, netloc = self._address(url)
        data = build_request(method, path, netloc, self.headers(headers), body)
        try:
            if stream:
                resp = await self._pool.stream(host, port, data, timeout)
            else:
                resp = await self._pool.request(host, port, data, method == "HEAD", timeout)
        except (ConnectionFailed, ValueError) as exc:
            if observe:
                self._observer.node_failed(url, "%s %s: %s" % (method, path[:80], exc))
            return NodeReply(url, None, {}, b"", error=str(exc))
        if resp.code == 403 and path.startswith("/_cluster/"):
            # reported even when not observed: the ring fetch is how a wrong secret shows first
            refused = getattr(self._observer, "secret_refused", None)  # optional for an observer
            if refused is not None:
                refused(url, "%s %s" % (method, path.split("?", 1)[0][:80]))
        if streaming_callback is not None and resp.body:
            streaming_callback(resp.body)
            resp.body = b""
        epoch = resp.headers.get(EPOCH_HEADER)
        if epoch:
            try:
                self._observer.epoch_seen(int(epoch), url)
            except ValueError:
                pass
        return NodeReply(url, resp.code, resp.headers, resp.body if resp.body is not None else b"",
                         first_byte_at=resp.first_byte_at)

    def failed(self, url, reason):
        """Report a node that failed in the middle of an exchange (a streamed body broke off)."""
        self._observer.node_failed(url, reason)

    async def get_file(self, url, name, first_bytes, timeout):
        """``(reply, record or None)`` of ``GET /_cluster/files/<name>`` asking for the
        first ``first_bytes`` bytes (the whole body of a small file) with the record."""
        reply = await self.request(url, "GET", "/_cluster/files" + quote_name(name),
                                   headers={"Range": "bytes=0-%d" % (first_bytes - 1)}, timeout=timeout)
        if reply.code in (200, 206, 404):
            return reply, record_from_headers(name, reply.headers)
        return reply, None

    async def head_record(self, url, name):
        """``(reply, record or None)``; the reply's ``ok`` says whether the node answered."""
        reply = await self.request(url, "HEAD", "/_cluster/files" + quote_name(name))
        if reply.code in (200, 404):
            return reply, record_from_headers(name, reply.headers)
        return reply, None
