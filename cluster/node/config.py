"""Node configuration: one immutable value given to ``make_app``; the form of a node URL."""

from dataclasses import dataclass, field

GiB = 1 << 30


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs; no globals.

    ``node_id`` is the advertised URL (also how peers reach it); ``peers`` the
    other initial members.  A ring stored in ``dir`` wins over ``peers``,
    ``replicas`` and ``partition_power`` (those only build the first ring).
    Intervals are seconds; ``sync_bandwidth`` bounds the bytes per second the
    background tasks move (0: unlimited).
    """

    dir: str
    node_id: str
    peers: tuple = field(default_factory=tuple)
    host: str = "127.0.0.1"
    port: int = 0
    replicas: int = 3
    partition_power: int = 10
    cluster_secret: str | None = None
    allow_public_writes: bool = False
    sync_interval: float = 30.0
    handoff_interval: float | None = None  # default: sync_interval
    reclaim_interval: float = 3600.0
    tombstone_ttl: float = 7 * 24 * 3600.0
    sync_bandwidth: float = 64 * 1024 * 1024
    peer_timeout: float = 10.0
    #: partitions reconciled / handed off at once (hides the peers' fsync latency)
    sync_concurrency: int = 4
    background: bool = True
    threads: int = 16
    chunk_size: int = 256 * 1024
    max_body_size: int = 16 * GiB
    max_header_size: int = 64 * 1024
    idle_connection_timeout: float = 300.0
    body_timeout: float = 3600.0
    #: access control and limits (filetracker/server/guard.py; flags of filetracker.server.main.add_guard_arguments)
    auth_file: str | None = None
    max_uri_bytes: int = 16 * 1024
    body_idle_timeout: float = 120.0
    send_timeout: float = 300.0
    max_uploads: int | None = None
    #: integrity (cluster/node/space.py, integrity.py, scrub.py): uploads are refused (507) when
    #: free disk < min_free_bytes; blobs are hashed before their first byte is served
    #: (verify_reads; verified files remembered in an LRU of verify_cache_entries); the
    #: scrubber re-hashes every blob at scrub_rate bytes/s, a pass every scrub_interval seconds
    #: (0: never); failed repairs are retried every repair_interval seconds.
    min_free_bytes: int = 64 * 1024 * 1024
    verify_reads: bool = True
    verify_cache_entries: int = 65536
    #: larger blobs are served at once and verified in the background (see integrity.py)
    verify_reads_max_bytes: int = 256 * 1024 * 1024
    scrub_rate: float = 8 * 1024 * 1024
    scrub_interval: float = 24 * 3600.0
    repair_interval: float = 60.0
    #: a repaired blob's quarantined copy is deleted quarantine_keep seconds after the repair
    #: (0: at the next repair/scrub pass); repaired copies above quarantine_max_bytes in all go
    #: oldest first (0: no cap).  Unrepaired copies are kept (cluster/node/integrity.py).
    quarantine_keep: float = 7 * 24 * 3600.0
    #: a blob no record references any more (its file was overwritten, deleted or handed off)
    #: stays readable this many seconds, so a gateway in the middle of serving it can fetch the
    #: rest (filetracker/storage/retired.py); 0: unlinked at once
    keep_replaced: float = 60.0
    quarantine_max_bytes: int = 0
    #: recently read records and small verified bodies kept in memory (filetracker/storage/readcache.py; 0: off)
    read_cache_bytes: int = 16 * 1024 * 1024
    #: answer POST /_cluster/fetch outside Tornado's handler cycle (cluster/node/fetchfront.py)
    fast_fetch: bool = True
