"""``filetracker-node``: run one storage node of a cluster.

    filetracker-node --dir DIR --port PORT --peers URL[,URL...] [--host 127.0.0.1]
                     [--advertise URL] [--replicas N] [--partition-power P]
                     [--cluster-secret-file F] [--allow-public-writes]
                     [--sync-interval S] [--tombstone-ttl S] [--log-level L]
                     [--min-free-bytes B] [--scrub-rate B] [--scrub-interval S]
                     [--verify-reads-max-bytes B] [--no-verify-reads]
                     [--quarantine-keep S] [--quarantine-max-bytes B]
                     [--read-cache-bytes B]

The node's id is its advertised URL (default ``http://HOST:PORT``).  Nodes
started with the same member set (itself plus ``--peers``) build the same ring.
SIGTERM or SIGINT stops it cleanly.  Usage errors exit with status 2, as does
a data folder another process (a running node or server) holds: the node takes
the folder's service lock before it opens anything in it
(:func:`filetracker.server.main.lock_data_folder`).
"""

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import sys

from cluster.node.app import make_app, make_server, shutdown, start_background
from cluster.node.config import NodeConfig
from cluster.peers import base_url, base_url_list
from cluster.ring import MAX_PARTITION_POWER
from cluster.secret import SecretError, read_secret
from filetracker import configfile
from filetracker.server import eventloop, fdlimit, observe
from filetracker.server.base import ACTIVITY_SETTING
from filetracker.server.main import (
    SHUTDOWN_GRACE,
    add_guard_arguments,
    check_guard_arguments,
    guard_config,
    lock_data_folder_or_exit,
    loopback_only,
    open_access_warning,
    port_number,
)
from filetracker.storage import StorageError
from filetracker.units import byte_count, seconds, timeout_seconds

log = logging.getLogger("cluster.node")


def build_parser():
    p = argparse.ArgumentParser(prog="filetracker-node", description="A storage node of a filetracker cluster.")
    p.add_argument("--dir", "-d", required=True, help="data folder of this node")
    p.add_argument("--port", "-p", type=port_number, required=True, help="TCP port to listen on")
    p.add_argument("--host", "-l", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--advertise", type=base_url, help="URL peers and gateways use (default http://HOST:PORT); the node id")
    p.add_argument("--peers", type=base_url_list, action="append", default=[],
                   help="the other initial members, comma-separated (may repeat)")
    p.add_argument("--replicas", "-n", type=int, default=3, help="copies of every file (default 3)")
    p.add_argument("--partition-power", type=int, default=10, help="2**P partitions (default 10; fixed)")
    p.add_argument("--cluster-secret-file", help="file with the shared secret of the internal API")
    p.add_argument("--insecure-open-internal-api", action="store_true",
                   help="listen beyond loopback without --cluster-secret-file: anyone who reaches the port "
                        "may then write, delete and read every file and install rings (default: refused)")
    p.add_argument("--allow-public-writes", action="store_true",
                   help="accept PUT/DELETE of the public protocol directly (default: read-only)")
    p.add_argument("--sync-interval", type=seconds, default=30.0,
                   help="seconds between anti-entropy and handoff passes (default 30)")
    p.add_argument("--reclaim-interval", type=seconds, default=3600.0,
                   help="seconds between passes reclaiming tombstones older than --tombstone-ttl (default 3600)")
    p.add_argument("--tombstone-ttl", type=seconds, default=7 * 24 * 3600.0,
                   help="age in seconds after which tombstones are reclaimed (default 7 days)")
    p.add_argument("--sync-bandwidth", type=byte_count, default=NodeConfig.sync_bandwidth, metavar="BYTES",
                   help="bytes/s the background tasks may move (e.g. 64M; default 64M; 0 = unlimited)")
    p.add_argument("--peer-timeout", type=timeout_seconds, default=10.0, help="seconds per peer exchange (default 10)")
    p.add_argument("--sync-concurrency", type=int, default=4,
                   help="partitions exchanged with peers at once by a background pass (default 4)")
    p.add_argument("--no-background", action="store_true",
                   help="run no background loops (passes only via POST /_cluster/run/<task>)")
    # integrity: reserved space, bitrot checks, scrubber (cluster/node/space.py, integrity.py, scrub.py)
    p.add_argument("--min-free-bytes", type=byte_count, default=64 << 20,
                   help="refuse uploads (507) when free disk space would drop below this (default 64M; 0: off)")
    p.add_argument("--scrub-rate", type=byte_count, default=8 << 20,
                   help="bytes/s the background scrubber hashes (default 8M; 0: unlimited)")
    p.add_argument("--scrub-interval", type=seconds, default=24 * 3600.0,
                   help="seconds between scrub passes (default 86400; 0: no background scrub)")
    p.add_argument("--no-verify-reads", action="store_true",
                   help="serve blobs without hashing them first (bitrot is then found only by the scrubber)")
    p.add_argument("--verify-reads-max-bytes", type=byte_count, default=256 << 20,
                   help="larger blobs are served at once and hashed in the background (default 256M; 0: no limit)")
    p.add_argument("--quarantine-keep", type=seconds, default=NodeConfig.quarantine_keep,
                   help="seconds a repaired blob's quarantined copy is kept (default 604800; 0: removed at the "
                        "next repair or scrub pass)")
    p.add_argument("--quarantine-max-bytes", type=byte_count, default=NodeConfig.quarantine_max_bytes,
                   help="delete the oldest repaired quarantined copies above this total (default 0: no cap)")
    p.add_argument("--keep-replaced", type=seconds, default=NodeConfig.keep_replaced, metavar="SECONDS",
                   help="seconds a blob stays readable after its file was overwritten, deleted or handed off, "
                        "so reads "
                        "under way finish (default 60; 0: unlinked at once)")
    p.add_argument("--read-cache-bytes", type=byte_count, default=NodeConfig.read_cache_bytes,
                   help="memory for recently read records and small verified bodies, answered without a "
                        "disk hop (default 16M; 0: off)")
    p.add_argument("--no-fast-fetch", action="store_true",
                   help="answer the gateways' batched reads (POST /_cluster/fetch) through the ordinary "
                        "handlers instead of the node's front (for comparison)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="default INFO")
    observe.add_logging_options(p)  # --log-format text|json
    add_guard_arguments(p, NodeConfig)  # --auth-file, --max-uploads, timeouts, size limits
    p.add_argument("--max-body-size", type=byte_count, default=NodeConfig.max_body_size, metavar="BYTES",
                   help="largest accepted upload (413 above it; bytes, or e.g. 512M, 1G; default 16G)")
    return p


def config_from_args(parser, args):
    """Validate ``args`` and build a :class:`NodeConfig` (``parser.error`` exits 2)."""
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if not 0 <= args.partition_power <= MAX_PARTITION_POWER:
        parser.error("--partition-power must be in 0..%d" % MAX_PARTITION_POWER)
    if args.sync_concurrency < 1:
        parser.error("--sync-concurrency must be at least 1")
    for option in ("sync_interval", "reclaim_interval", "peer_timeout"):
        if getattr(args, option) <= 0:   # 0 would spin a background loop, or time out at once
            parser.error("--%s must be positive" % option.replace("_", "-"))
    check_guard_arguments(parser, args)
    secret = None
    if args.cluster_secret_file:
        try:
            secret = read_secret(args.cluster_secret_file)
        except SecretError as e:
            parser.error(str(e))
    elif not (loopback_only(args.host) or args.insecure_open_internal_api):
        # /_cluster/* is guarded by the secret alone (not by --auth-file): without one it would
        # take writes, deletes and rings from anyone who reaches the port
        parser.error("listening on %s without --cluster-secret-file would open the internal API "
                     "(/_cluster/*: writes, deletes, rings) to anyone who can reach the port; give every "
                     "node and gateway the same --cluster-secret-file (or, knowingly, "
                     "--insecure-open-internal-api)" % (args.host or "*"))
    node_id = args.advertise or "http://%s:%d" % (args.host, args.port)
    peers = tuple(sorted({u for group in args.peers for u in group} - {node_id}))
    return NodeConfig(dir=args.dir, node_id=node_id, peers=peers, host=args.host, port=args.port,
                      replicas=args.replicas, partition_power=args.partition_power, cluster_secret=secret,
                      allow_public_writes=args.allow_public_writes, sync_interval=args.sync_interval,
                      reclaim_interval=args.reclaim_interval, tombstone_ttl=args.tombstone_ttl,
                      sync_bandwidth=args.sync_bandwidth, peer_timeout=args.peer_timeout,
                      sync_concurrency=args.sync_concurrency,
                      min_free_bytes=args.min_free_bytes, scrub_rate=args.scrub_rate,
                      scrub_interval=args.scrub_interval, verify_reads=not args.no_verify_reads,
                      verify_reads_max_bytes=args.verify_reads_max_bytes,
                      quarantine_keep=args.quarantine_keep, quarantine_max_bytes=args.quarantine_max_bytes,
                      keep_replaced=args.keep_replaced,
                      read_cache_bytes=args.read_cache_bytes, fast_fetch=not args.no_fast_fetch,
                      background=not args.no_background, max_body_size=args.max_body_size,
                      **guard_config(args))


async def serve(config):
    try:
        app = make_app(config)
    except (sqlite3.Error, StorageError) as e:   # e.g. a records file that is no database
        raise SystemExit("filetracker-node: cannot open the store in %s: %s" % (config.dir, e))
    server = make_server(app, config)
    try:
        server.listen(config.port, config.host)
    except OSError as e:
        shutdown(app)
        raise SystemExit("filetracker-node: cannot listen on %s:%d: %s" % (config.host, config.port, e))
    start_background(app)
    log.info("node %s listening on %s:%d (ring epoch %d, %d nodes)", config.node_id, config.host,
             config.port, app.node.ring.epoch, len(app.node.ring.nodes))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    server.stop()   # no new connections; the requests in progress may end, for SHUTDOWN_GRACE at most
    left = await server.drain(app.settings[ACTIVITY_SETTING], SHUTDOWN_GRACE)
    if left:
        log.warning("%d requests did not finish within %ss; their connections were closed", left, SHUTDOWN_GRACE)
    await loop.run_in_executor(None, shutdown, app)


def main(argv=None):
    parser = build_parser()
    args = configfile.parse_args(parser, argv)  # --config FILE, then the flags
    config = config_from_args(parser, args)
    eventloop.check_or_exit("filetracker-node")
    # before the node opens its store, ring or hints (a second node would hand data off)
    folder_lock = lock_data_folder_or_exit(parser, os.path.abspath(config.dir))  # noqa: F841 - held until exit
    fdlimit.raise_fd_limit()
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    observe.setup_logging(args.log_format)
    if args.log_level != "DEBUG":
        # One line per request costs real throughput; errors are still logged by the handlers.
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    # a node serves the public protocol too: reached around the gateways, it is as open as one
    warning = open_access_warning("filetracker-node", args.host, args.port, args.auth_file,
                                  "reads and writes" if args.allow_public_writes else "reads")
    if warning:
        log.warning("%s; give the nodes the gateways' token file, or let only the gateways reach them", warning)
    try:
        eventloop.run(serve(config))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
