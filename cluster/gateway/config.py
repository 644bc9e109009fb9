"""Gateway configuration: one immutable value passed to ``make_app``."""

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs to know; no globals.

    ``nodes`` are seed URLs (any of them serves the ring).  ``timeout`` bounds
    every single exchange with a node (connect, one response, one stalled
    body write): a hung node costs at most that much, once, before it is
    marked down.  ``range_size`` is the first piece of a body read with the
    record (a whole small file); the rest of a larger body is relayed from
    one replica as it arrives, with bounded memory (``cluster/gateway/pool.py``).
    """

    nodes: tuple
    write_quorum: int = 2
    read_quorum: int = 2
    timeout: float = 5.0
    cluster_secret: str | None = None
    range_size: int = 4 * 1024 * 1024
    #: for this long after the gateway installs a new ring, a read of a name whose owners
    #: changed also asks the owners under the rings replaced in that time (cluster/gateway/
    #: reads.py, widen_read): an owner that missed a write and a new owner that has not received
    #: it yet could otherwise form a read quorum without the acknowledged version.  It should
    #: cover the time the data takes to move (``filetracker-admin rebalance`` prints it); 0:
    #: only on a miss
    transition_reads: float = 3600.0
    #: a node that refused or timed out is skipped for at least this long
    down_seconds: float = 2.0
    #: probe interval for nodes marked down
    probe_interval: float = 0.5
    max_clients: int = 100
    #: migration mode: names the cluster holds no record of are served from this
    #: old filetracker server (see cluster/gateway/fallback.py)
    fallback_url: str | None = None
    #: copy files read through the fallback into the cluster (off: --fallback-no-copy)
    fallback_copy: bool = True
    #: request limits and access control (filetracker/server/guard.py), like the server's
    max_body_size: int = 16 * 1024 ** 3
    max_header_size: int = 64 * 1024
    max_uri_bytes: int = 16 * 1024
    idle_connection_timeout: float = 300.0
    body_timeout: float = 3600.0
    body_idle_timeout: float = 120.0
    send_timeout: float = 300.0
    max_uploads: int | None = None
    auth_file: str | None = None
    #: answer plain GET/HEAD of small files outside Tornado's handler cycle
    #: (cluster/gateway/fastpath.py); off: --no-fast-reads
    fast_reads: bool = True
    #: send small PUTs to the nodes in batches, POST /_cluster/store
    #: (cluster/gateway/smallput.py); off: --no-batch-writes
    batch_writes: bool = True
    #: time the nodes' answers and read a much slower node last (cluster/gateway/latency.py);
    #: off: --no-avoid-slow
    avoid_slow: bool = True
