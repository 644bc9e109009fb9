"""A synchronous client of the nodes' internal ``/_cluster/`` API.

Used by the nodes' background tasks (which run in their own threads, never on
the event loop) and usable by the admin CLI.  ``requests`` sessions keep
connections alive (one pooled session per thread, since sessions are not
documented as thread-safe); every exchange has a connect and a read timeout.

Bodies are streamed both ways: :meth:`PeerClient.put_file` sends an open file
(with ``Content-Length``), :meth:`PeerClient.fetch_blob` hands the body to a
callback chunk by chunk.  Small blobs (at most :data:`INLINE_BLOB_MAX` bytes)
travel many to a request instead: :meth:`PeerClient.post_records_inline` sends
them inside the record list, :meth:`PeerClient.read_small` fetches records and
bodies of many names at once; a request carries at most
:data:`INLINE_BATCH_COUNT` of them and :data:`INLINE_BATCH_BYTES` of bodies, so
memory stays bounded.  An optional :class:`RateLimiter` bounds the bytes
per second a background task moves.

Network failures and error statuses raise :class:`PeerError` (``status`` None
when no answer arrived).  Every answer's ``X-Ring-Epoch`` is reported to
``on_epoch(epoch, url)`` so a node can notice a newer ring.
"""

import argparse
import threading
import time
from urllib.parse import quote, urlsplit

import msgpack
import requests
from requests.adapters import HTTPAdapter

from cluster.ring import Ring
from cluster.secret import SECRET_HEADER
from filetracker.records import Record

EPOCH_HEADER = "X-Ring-Epoch"
#: a node's answer to a streamed replica PUT: the SHA-256 of the content it received (the
#: gateway tells "stored" from "another content of this version is stored" by it)
UPLOAD_SHA256_HEADER = "X-Upload-Sha256"
#: on a replica PUT of a gzip body: the most bytes it may decode to (the gateway's
#: --max-body-size; the node applies the smaller of it and its own)
DECODED_LIMIT_HEADER = "X-Max-Decoded-Size"
CHUNK = 256 * 1024
#: largest blob sent inside a record list (and the largest body ``POST /_cluster/read`` returns)
INLINE_BLOB_MAX = 64 * 1024
#: most blobs, and most bytes of blobs, in one request
INLINE_BATCH_COUNT = 64
INLINE_BATCH_BYTES = 256 * 1024
#: most partitions asked for in one POST /_cluster/partitions
MAX_PARTITIONS_PER_REQUEST = 64


def base_url(text):
    """A node URL, as an argparse type (``--advertise``, ``--peers``, the gateway's ``--nodes``):
    ``http(s)://HOST:PORT`` without path or query; a trailing ``/`` is dropped."""
    text = text.strip().rstrip("/")
    parts = urlsplit(text)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # not a number, or above 65535
        port_ok = False
    if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.path
            or parts.query or parts.fragment):
        raise argparse.ArgumentTypeError("not a base URL (http://HOST:PORT): %r" % text)
    return text


def base_url_list(text):
    """argparse type of comma-separated node URLs (empty items skipped)."""
    return [base_url(u) for u in text.split(",") if u.strip()]


class PeerError(Exception):
    """A peer did not answer (``status`` None) or answered with an error status.
    ``secret_sent``: the request carried a cluster secret (a 403 then means a wrong one)."""

    def __init__(self, message, url=None, status=None, secret_sent=False):
        super().__init__(message)
        self.url = url
        self.status = status
        self.secret_sent = secret_sent


def quote_name(name):
    """URL path form of a file name (UTF-8 percent-encoded, ``/`` kept)."""
    return quote(name, safe="/")


def record_headers(record):
    """The *record header set* of ``record`` (a dict of header -> str)."""
    return {"X-Version": str(record.version), "X-Sha256": record.sha256, "X-Size": str(record.size),
            "X-Deleted": "1" if record.deleted else "0"}


def record_from_headers(name, headers):
    """The record a *record header set* describes, or None when there is none."""
    version = headers.get("X-Version")
    if not version:
        return None
    return Record(name=name, version=int(version), sha256=headers.get("X-Sha256") or "",
                  size=int(headers.get("X-Size") or 0), deleted=headers.get("X-Deleted", "0") == "1")


def unpack(body):
    """Decode a msgpack answer (integer map keys allowed, e.g. digests by partition)."""
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def _decoded(resp, url, what):
    """The msgpack answer of ``resp``; PeerError (502) when it does not decode."""
    try:
        return unpack(resp.content)
    except Exception as e:  # noqa: BLE001 - any decoding problem is the peer's
        raise PeerError("%s on %s: the answer is not msgpack: %s" % (what, url, e), url=url, status=502) from None


class RateLimiter:
    """A token bucket of ``rate`` bytes per second (``None`` or 0: unlimited); thread-safe."""

    def __init__(self, rate, burst=None):
        self.rate = float(rate or 0)
        self.burst = float(burst or max(self.rate, CHUNK))
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def consume(self, n):
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            deficit = -self._tokens
        if deficit > 0:
            time.sleep(deficit / self.rate)


class _LimitedFile:
    """A read-only file wrapper that charges a limiter; ``len`` lets requests send Content-Length."""

    def __init__(self, f, length, limiter):
        self._f = f
        self.len = length
        self._limiter = limiter

    def read(self, n=-1):
        data = self._f.read(CHUNK if n is None or n < 0 else min(n, CHUNK))
        if data and self._limiter is not None:
            self._limiter.consume(len(data))
        return data


class PeerClient:
    """Requests to nodes' internal API.  Thread-safe (a session per thread)."""

    def __init__(self, secret=None, timeout=10.0, connect_timeout=2.0, on_epoch=None, limiter=None):
        self.secret = secret
        self.timeout = (connect_timeout, timeout)
        self.on_epoch = on_epoch
        self.limiter = limiter
        self._local = threading.local()
        self._sessions = []
        self._lock = threading.Lock()

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.trust_env = False  # never route loopback cluster traffic through a proxy
            adapter = HTTPAdapter(pool_connections=32, pool_maxsize=8, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            if self.secret:
                s.headers[SECRET_HEADER] = self.secret
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self):
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
        self._local = threading.local()

    def request(self, method, url, path, ok=(200,), **kwargs):
        """One exchange; returns the Response when its status is in ``ok``, else PeerError."""
        kwargs.setdefault("timeout", self.timeout)
        full = url.rstrip("/") + path
        try:
            resp = self._session().request(method, full, **kwargs)
        except requests.RequestException as e:
            raise PeerError("%s %s: %s" % (method, full, e), url=url) from None
        epoch = resp.headers.get(EPOCH_HEADER)
        if epoch and self.on_epoch is not None:
            try:
                self.on_epoch(int(epoch), url)
            except ValueError:
                pass
        if resp.status_code not in ok:
            reason = resp.headers.get("X-Exception") or resp.reason
            resp.close()
            raise PeerError("%s %s: %d %s" % (method, full, resp.status_code, reason),
                            url=url, status=resp.status_code, secret_sent=bool(self.secret))
        return resp

    # ------------------------------------------------------------------ ring and status

    def get_ring(self, url):
        return Ring.from_dict(unpack(self.request("GET", url, "/_cluster/ring").content))

    def put_ring(self, url, ring):
        """Install ``ring`` on the node; True if accepted, False if it holds a newer one (409)."""
        resp = self.request("PUT", url, "/_cluster/ring", ok=(200, 409), data=msgpack.packb(ring.to_dict()),
                            headers={"Content-Type": "application/msgpack"})
        return resp.status_code == 200

    def status(self, url):
        return self.request("GET", url, "/_cluster/status").json()

    def run_task(self, url, task, timeout=120.0):
        """Run one pass of a node's background task now (``sync``, ``handoff``, ``reclaim``)."""
        return self.request("POST", url, "/_cluster/run/" + task, data=b"",
                            timeout=(self.timeout[0], timeout)).json()

    # ------------------------------------------------------------------ records

    def digests(self, url):
        """``{partition: digest_hex}`` of every partition the node holds."""
        return {int(k): v for k, v in unpack(self.request("GET", url, "/_cluster/digests").content).items()}

    def partition_records(self, url, partition):
        body = self.request("GET", url, "/_cluster/partition/%d" % int(partition)).content
        return [Record.from_dict(d) for d in unpack(body)]

    def partitions_records(self, url, partitions):
        """``{partition: [Record]}`` of the first of ``partitions`` (at most
        :data:`MAX_PARTITIONS_PER_REQUEST`) in one request: at least the first one, and as
        many more as the node lists in one answer (ask again for the others).  Raises
        PeerError with status 404 from a node without ``POST /_cluster/partitions`` (ask
        one by one), 502 for an answer that does not fit."""
        parts = [int(p) for p in partitions]
        resp = self.request("POST", url, "/_cluster/partitions", data=msgpack.packb(parts),
                            headers={"Content-Type": "application/msgpack"})
        answer = _decoded(resp, url, "POST /_cluster/partitions")
        if not isinstance(answer, dict) or parts[0] not in answer or not set(answer) <= set(parts):
            raise PeerError("POST %s/_cluster/partitions: not the partitions asked for" % url, url=url, status=502)
        try:
            return {p: [Record.from_dict(d) for d in answer[p]] for p in parts if p in answer}
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            raise PeerError("POST %s/_cluster/partitions: malformed record: %s" % (url, e), url=url,
                            status=502) from None

    def post_records(self, url, records):
        """Offer records; the node merges those whose blob it has. Returns the missing sha256s."""
        body = msgpack.packb([r.to_dict() for r in records])
        resp = self.request("POST", url, "/_cluster/records", data=body,
                            headers={"Content-Type": "application/msgpack"})
        return list(unpack(resp.content).get("missing", []))

    def post_records_inline(self, url, records, blobs):
        """Offer ``records`` with their content: ``blobs`` maps sha256 -> bytes (each at most
        :data:`INLINE_BLOB_MAX`).  The node stores the winning ones in one group commit.

        Returns ``(missing, understood)``: the sha256s still missing there, and
        whether the node took inline content at all (an older node ignores it and
        reports every blob it lacks as missing: send those one by one).
        """
        items = []
        for r in records:
            d = r.to_dict()
            data = blobs.get(r.sha256)
            if data is not None and not r.deleted:
                d["data"] = data
            items.append(d)
        resp = self.request("POST", url, "/_cluster/records", data=msgpack.packb(items, use_bin_type=True),
                            headers={"Content-Type": "application/msgpack"})
        answer = _decoded(resp, url, "POST /_cluster/records")
        if not isinstance(answer, dict) or not isinstance(answer.get("missing", []), list):
            raise PeerError("POST %s/_cluster/records: malformed answer" % url, url=url, status=502)
        return list(answer.get("missing", [])), "inline" in answer

    def read_small(self, url, names):
        """``POST /_cluster/read``: one row per name (``["ok", version, sha256, size, data]`` for a
        file of at most :data:`INLINE_BLOB_MAX` bytes; ``"big"``, ``"missing"`` or ``"corrupt"``
        rows otherwise, see :func:`cluster.node.fastpath.read_many`).  At most
        :data:`INLINE_BATCH_COUNT` names."""
        # cache=0: files copied between nodes are read once; they must not evict the node's hot reads
        resp = self.request("POST", url, "/_cluster/read", data=msgpack.packb(list(names)), params={"cache": "0"},
                            headers={"Content-Type": "application/msgpack"})
        rows = _decoded(resp, url, "POST /_cluster/read")
        if not isinstance(rows, list) or len(rows) != len(names):
            raise PeerError("POST %s/_cluster/read: %d rows for %d names"
                            % (url, len(rows) if isinstance(rows, list) else -1, len(names)), url=url, status=502)
        return rows

    def head_record(self, url, name):
        """The node's record of ``name`` (tombstones included) or None."""
        resp = self.request("HEAD", url, "/_cluster/files" + quote_name(name), ok=(200, 404))
        return record_from_headers(name, resp.headers)

    def list_folder(self, url, folder, max_version=None):
        """``[name, version, sha256, size, deleted]`` of every record under ``folder``."""
        params = {} if max_version is None else {"max_version": str(int(max_version))}
        path = "/_cluster/list" + quote_name(folder if folder.startswith("/") else "/" + folder)
        return unpack(self.request("GET", url, path, params=params).content)

    def delete_file(self, url, name, version):
        resp = self.request("DELETE", url, "/_cluster/files" + quote_name(name),
                            params={"version": str(int(version))})
        return record_from_headers(name, resp.headers)

    def put_file(self, url, record, f, hint_for=None):
        """Store ``record`` on the node from the open file ``f`` (its content, streamed).

        Returns ``(winner, applied)`` as the node reports them.
        """
        headers = {"SHA256-Checksum": record.sha256, "Content-Type": "application/octet-stream"}
        if hint_for:
            headers["X-Hint-For"] = hint_for
        body = _LimitedFile(f, record.size, self.limiter)
        resp = self.request("PUT", url, "/_cluster/files" + quote_name(record.name),
                            params={"version": str(record.version)}, data=body, headers=headers)
        return record_from_headers(record.name, resp.headers), resp.headers.get("X-Applied") == "1"

    def fetch_blob(self, url, sha256, write):
        """Stream the blob ``sha256`` from the node into ``write(chunk)``; returns the byte count."""
        resp = self.request("GET", url, "/_cluster/blobs/" + sha256, stream=True)
        total = 0
        try:
            for chunk in resp.iter_content(CHUNK):
                if self.limiter is not None:
                    self.limiter.consume(len(chunk))
                write(chunk)
                total += len(chunk)
        except requests.RequestException as e:
            raise PeerError("GET blob %s from %s: %s" % (sha256, url, e), url=url) from None
        finally:
            resp.close()
        return total
