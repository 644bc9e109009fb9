"""Request metrics, ``/metrics`` and access log lines for every Tornado app of the project.

One call wires an application (single server, cluster node or gateway)::

    registry = CollectorRegistry()
    observe.instrument(app, registry, executor=...)

* every finished request (Tornado's ``log_function`` setting, called once per
  request) updates ``filetracker_http_requests_total{method,status,route}``,
  the latency histogram ``filetracker_http_request_duration_seconds{method,route}``
  and the byte counters ``filetracker_http_{received,sent}_bytes_total{method}``
  (a method outside :data:`METHODS` is counted as ``other``),
  and writes one access line (logger ``filetracker.access``, level INFO);
* ``GET /metrics`` answers the registry in Prometheus text format.  The
  registry is the app's own (never prometheus_client's global default), so
  several apps in one process (tests) do not clash; collection runs in
  ``executor`` because cluster collectors may read the store.

Bytes sent are counted exactly by an output transform (every chunk written),
plus :func:`count_sent` for bytes sent around it (sendfile, the gateway's relay);
bytes received are the handler's ``bytes_received`` attribute when it keeps
one, else the request's ``Content-Length`` (a chunked upload without either
counts 0).

Access lines carry method, path (query string dropped: it may hold tokens),
the file name when the path names one, status, bytes, duration and the peer
address; never a header.  :func:`setup_logging` gives every service the same
``--log-format text|json`` (see :func:`add_logging_options`).
"""

import json
import logging
import re
import sys
import threading
import time
from urllib.parse import unquote

import tornado.web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from tornado.ioloop import IOLoop

from filetracker.server.base import BaseHandler, logged_path

access_log = logging.getLogger("filetracker.access")

#: Latency buckets (seconds): sub-millisecond cache hits up to multi-minute large bodies.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

#: Values of the ``route`` label: the first path segment (two under ``/_cluster/``) when known,
#: else ``other``, so a client cannot grow the label set.
ROUTES = frozenset({"files", "list", "version", "metrics", "status"})
CLUSTER_ROUTES = frozenset({"ring", "files", "blobs", "list", "records", "digests", "partition", "status",
                            "lookup", "read", "fetch", "store",
                            "run", "verify", "draining"})

#: Path prefixes after which the rest of the path is a file name.
_NAME_PREFIXES = ("/files/", "/_cluster/files/")
#: ``scheme://user:password@host`` in a log message: the credentials are masked.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class CountSent(tornado.web.OutputTransform):
    """An output transform (one per request) adding the length of every chunk written to
    ``request.ft_bytes_sent`` (headers excluded).  Defined once at module level: a class
    made per request cost about 5 % of a small GET."""

    def __init__(self, request):
        self.request = request
        request.ft_bytes_sent = 0

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        self.request.ft_bytes_sent += len(chunk)
        return status_code, headers, chunk

    def transform_chunk(self, chunk, finishing):
        self.request.ft_bytes_sent += len(chunk)
        return chunk


def count_sent(request, n):
    """Count ``n`` body bytes sent around ``RequestHandler.write`` (sendfile, a relay
    writing to the connection), which the output transform does not see."""
    request.ft_bytes_sent = getattr(request, "ft_bytes_sent", 0) + n


def file_name(path):
    """The file name a request path names (``/files/a/b`` -> ``/a/b``), or None."""
    for prefix in _NAME_PREFIXES:
        if path.startswith(prefix):
            return "/" + unquote(path[len(prefix):])
    return None


#: the ``method`` labels kept as they are; any other method is counted as ``other``
METHODS = frozenset(("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"))


def route_of(path):
    """The ``route`` label of a request path: ``/files/a`` -> ``files``, ``/_cluster/files/a`` ->
    ``_cluster/files``, anything unknown -> ``other``."""
    parts = path.split("/", 3)
    first = parts[1] if len(parts) > 1 else ""
    if first == "_cluster":
        second = parts[2] if len(parts) > 2 else ""
        return "_cluster/" + (second if second in CLUSTER_ROUTES else "other")
    if first == "" and len(parts) <= 2:
        return "root"
    return first if first in ROUTES else "other"


def bytes_received(handler):
    explicit = getattr(handler, "bytes_received", None)
    if isinstance(explicit, int):
        return explicit
    try:
        return max(0, int(handler.request.headers.get("Content-Length", 0)))
    except ValueError:
        return 0


class RequestObserver:
    """The ``log_function`` of one application: metrics plus the access line."""

    def __init__(self, registry, prefix="filetracker"):
        self.requests = Counter(prefix + "_http_requests", "HTTP requests finished, by method, status and route",
                                ["method", "status", "route"], registry=registry)
        self.latency = Histogram(prefix + "_http_request_duration_seconds",
                                 "Time from request start to the last byte sent",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.received = Counter(prefix + "_http_received_bytes", "Request body bytes received",
                                ["method"], registry=registry)
        self.sent = Counter(prefix + "_http_sent_bytes", "Response body bytes sent", ["method"],
                            registry=registry)
        # labelled children by label values: labels() is the costly part of an update
        self._children = {}

    def _series(self, method, status, route):
        if method not in METHODS:
            # a label per method a client makes up would be series kept for good (200 odd
            # methods made 5,000 series and a 470 KB /metrics page)
            method = "other"
        key = (method, status, route)
        series = self._children.get(key)
        if series is None:
            if len(self._children) > 4096:   # bounded anyway: drop the cache, not the metrics
                self._children.clear()
            series = (self.requests.labels(method, str(status), route), self.latency.labels(method, route),
                      self.received.labels(method), self.sent.labels(method))
            self._children[key] = series
        return series

    def __call__(self, handler):
        request = handler.request
        self.record(request.method or "-", request.path or "/", handler.get_status(),
                    request.request_time(), bytes_received(handler), getattr(request, "ft_bytes_sent", 0),
                    request.remote_ip)

    def record(self, method, path, status, seconds, received, sent, remote):
        """Count one finished request and write its access line (also for answers given
        outside a ``RequestHandler``, e.g. the gateway's fast path)."""
        requests_, latency, received_, sent_ = self._series(method, status, route_of(path))
        requests_.inc()
        latency.observe(seconds)
        if received:
            received_.inc(received)
        if sent:
            sent_.inc(sent)
        if access_log.isEnabledFor(logging.INFO):
            name = file_name(path)
            fields = {"method": method, "path": logged_path(unquote(path)),
                      "name": logged_path(name) if name else None, "status": status,
                      "bytes_in": received, "bytes_out": sent, "duration_ms": round(seconds * 1000.0, 3),
                      "remote": remote}
            # makeRecord + handle: what .info() does, minus the caller lookup (a third of its cost)
            access_log.handle(access_log.makeRecord(
                access_log.name, logging.INFO, "", 0, "%s %s %d in=%d out=%d %.1fms %s",
                (method, fields["path"], status, received, sent, seconds * 1000.0, remote), None,
                extra={"access": fields}))


class MetricsHandler(BaseHandler):
    """``GET /metrics``: the app's registry in the Prometheus text format.

    A :class:`~filetracker.server.base.BaseHandler`, so the server's guard applies (with
    ``--auth-file``, a ``read`` token for the whole tree is needed).
    """

    def initialize(self, registry, executor=None):
        self.registry = registry
        self.executor = executor

    async def get(self):
        body = await IOLoop.current().run_in_executor(self.executor, generate_latest, self.registry)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    def head(self):
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)


def instrument(app, registry, executor=None, metrics_path="/metrics"):
    """Wire request metrics, access lines and ``GET metrics_path`` into ``app``.

    ``registry`` is the app's own :class:`prometheus_client.CollectorRegistry`
    (other collectors, e.g. cluster gauges, may be registered on it too).
    Returns the :class:`RequestObserver`.  ``app.metrics_registry`` is set.
    """
    observer = RequestObserver(registry)
    app.settings["log_function"] = observer
    app.add_transform(CountSent)
    app.add_handlers(r".*", [(metrics_path, MetricsHandler, {"registry": registry, "executor": executor})])
    app.metrics_registry = registry
    return observer


# ---------------------------------------------------------------------------- log lines


def _redact(text):
    return _URL_CREDENTIALS.sub("***@", text)


class TextFormatter(logging.Formatter):
    """``time level logger: message``, credentials in URLs masked."""

    def __init__(self, with_pid=False):
        fmt = "%(asctime)s " + ("%(process)d " if with_pid else "") + "%(levelname)s %(name)s: %(message)s"
        super().__init__(fmt)

    def format(self, record):
        return _redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601 UTC), ``level``, ``logger``, ``pid``,
    ``message``, plus the access fields (``method``, ``path``, ``name``, ``status``,
    ``bytes_in``, ``bytes_out``, ``duration_ms``, ``remote``) on access lines and
    ``exception`` when there is one."""

    def format(self, record):
        doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                       + ".%03dZ" % int(record.msecs),
               "level": record.levelname, "logger": record.name, "pid": record.process,
               "message": _redact(record.getMessage())}
        fields = getattr(record, "access", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = _redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


def add_logging_options(parser):
    """Add ``--log-format text|json`` to an argparse parser (the same on every service)."""
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="log line format: text (default) or json (one object per line); "
                             "one access line per request at INFO")


def setup_logging(log_format="text", level=None, stream=None, with_pid=False):
    """Put the chosen formatter on the root logger's handlers (adding a stderr one if none).

    Call after the service's own ``logging.basicConfig``; ``level`` (a name or
    number) is applied to the root logger when given.  Access lines show when
    the root level is INFO or lower.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(stream or sys.stderr))
    formatter = JsonFormatter() if log_format == "json" else TextFormatter(with_pid=with_pid)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    if level is not None:
        root.setLevel(level.upper() if isinstance(level, str) else level)


# ---------------------------------------------------------------------------- the single server's gauges


class StoreCollector:
    """Disk gauges of one :class:`~filetracker.storage.ObjectStore` (``filetracker_store_*``).

    ``store.stats()`` runs SQLite aggregates, so its result is cached for
    ``cache_seconds``: scrapes cost at most one scan per interval.
    """

    def __init__(self, store, cache_seconds=5.0):
        self.store = store
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._stats = None
        self._at = 0.0

    def collect(self):
        with self._lock:
            if self._stats is None or time.monotonic() - self._at >= self.cache_seconds:
                self._stats, self._at = self.store.stats(), time.monotonic()
            stats = self._stats
        for key, doc in (("files", "Live files stored"), ("bytes", "Bytes of live files stored"),
                         ("tombstones", "Deletion records kept"),
                         ("free_bytes", "Free bytes of the data folder's filesystem")):
            yield gauge("filetracker_store_" + key, doc, stats[key])


def gauge(name, doc, value):
    """One unlabelled gauge sample, for custom collectors' ``collect()``."""
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def collector_registry(collector):
    """A new registry holding ``collector`` and the process metrics (memory, CPU, fds)."""
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def server_registry(store):
    """A registry for ``filetracker-server``: its store's gauges and the process metrics."""
    return collector_registry(StoreCollector(store))
