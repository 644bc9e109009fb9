"""``filetracker-gateway``: run the stateless cluster router.

    filetracker-gateway --port PORT [--host 127.0.0.1] --nodes URL[,URL...]
        [--write-quorum W] [--read-quorum R] [--timeout S]
        [--cluster-secret-file F] [--log-level L] [--fallback-url URL [--fallback-no-copy]]
        [--no-fast-reads] [--processes N]
"""

import argparse
import asyncio
import logging
import signal
import sys

from cluster.gateway.app import make_app
from cluster.gateway.config import GatewayConfig
from cluster.gateway.fastpath import serve_front
from cluster.gateway.holders import poll_forever
from cluster.gateway.latency import probe_forever
from cluster.gateway.procs import run_processes
from cluster.peers import base_url_list
from cluster.secret import SecretError, read_secret
from filetracker import configfile
from filetracker.server import eventloop, fdlimit, observe
from filetracker.server.app import make_server
from filetracker.server.base import ACTIVITY_SETTING
from filetracker.server.forking import MAX_WORKERS
from filetracker.server.main import (
    SHUTDOWN_GRACE,
    add_guard_arguments,
    check_guard_arguments,
    guard_config,
    open_access_warning,
    port_number,
)
from filetracker.units import byte_count, seconds, timeout_seconds


def parse_args(argv):
    """``(args, nodes)``; ``args.cluster_secret`` is the secret read from its file (or None)."""
    p = argparse.ArgumentParser(prog="filetracker-gateway",
                                description="Stateless router of a filetracker cluster (public protocol).")
    p.add_argument("--port", type=port_number, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--nodes", type=base_url_list, required=True, metavar="URL[,URL...]",
                   help="comma-separated node URLs, http://HOST:PORT (any of them serves the ring)")
    # --nodes are seeds (any one serves the ring), so a quorum is checked against a name's
    # replicas at run time (a larger one is lowered to them), not against how many are listed
    p.add_argument("--write-quorum", type=int, default=2, metavar="W",
                   help="replicas that must store a write (default 2; at most a name's replicas)")
    p.add_argument("--read-quorum", type=int, default=2, metavar="R",
                   help="replicas a read asks (default 2; at most a name's replicas)")
    p.add_argument("--timeout", type=timeout_seconds, default=5.0, metavar="S",
                   help="seconds a node may take for one exchange before it counts as down (default 5)")
    p.add_argument("--cluster-secret-file", metavar="F",
                   help="file with the shared secret of the nodes' internal API (as given to the nodes)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="default INFO")
    observe.add_logging_options(p)  # --log-format text|json
    p.add_argument("--fallback-url", metavar="URL",
                   help="migration mode: serve names the cluster does not hold from this old filetracker "
                        "server (streamed through) and copy them into the cluster in the background")
    p.add_argument("--fallback-no-copy", action="store_true",
                   help="with --fallback-url: serve from the old server but do not copy into the cluster")
    add_guard_arguments(p, GatewayConfig)  # --auth-file, --max-uploads, timeouts, size limits
    p.add_argument("--max-body-size", type=byte_count, default=GatewayConfig.max_body_size, metavar="BYTES",
                   help="largest accepted upload (413 above it; bytes, or e.g. 512M, 1G; default 16G)")
    p.add_argument("--no-fast-reads", action="store_true",
                   help="answer every request through the full handler cycle (the fast path for "
                        "small GET/HEAD, cluster/gateway/fastpath.py, is on by default)")
    p.add_argument("--no-batch-writes", action="store_true",
                   help="stream every PUT to each replica on its own (small PUTs are sent to the "
                        "nodes in batches by default, cluster/gateway/smallput.py)")
    p.add_argument("--no-avoid-slow", action="store_true",
                   help="read every owner in ring order, however slowly it answers (by default a node "
                        "much slower than the others is asked last, cluster/gateway/latency.py)")
    p.add_argument("--transition-reads", type=seconds, default=GatewayConfig.transition_reads, metavar="S",
                   help="seconds after a ring change during which reads of moved names also ask the "
                        "previous owners (default 3600); reads ask the nodes that still hold a moved partition "
                        "(polled every 5 s) in any case")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="gateway processes sharing the listening socket (default 1; one per CPU core helps "
                        "on multi-core hosts; see cluster/gateway/procs.py)")
    args = configfile.parse_args(p, argv)  # --config FILE, then the flags
    if args.fallback_url and not args.fallback_url.startswith(("http://", "https://")):
        p.error("--fallback-url must be an http:// or https:// URL")
    if args.fallback_no_copy and not args.fallback_url:
        p.error("--fallback-no-copy needs --fallback-url")
    nodes = tuple(dict.fromkeys(args.nodes))
    if not nodes:
        p.error("--nodes needs at least one URL")
    for flag in ("write_quorum", "read_quorum"):
        if getattr(args, flag) < 1:
            p.error("--%s must be at least 1" % flag.replace("_", "-"))
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    check_guard_arguments(p, args)
    if not 1 <= args.processes <= MAX_WORKERS:
        p.error("--processes must be from 1 to %d" % MAX_WORKERS)
    args.cluster_secret = None
    if args.cluster_secret_file:
        try:
            args.cluster_secret = read_secret(args.cluster_secret_file)
        except SecretError as e:
            p.error(str(e))
    return args, nodes


async def serve(args, nodes, sockets=None):
    config = GatewayConfig(nodes=nodes, write_quorum=args.write_quorum, read_quorum=args.read_quorum,
                           timeout=args.timeout, cluster_secret=args.cluster_secret,
                           fallback_url=args.fallback_url, fallback_copy=not args.fallback_no_copy,
                           max_body_size=args.max_body_size, fast_reads=not args.no_fast_reads,
                           batch_writes=not args.no_batch_writes, transition_reads=args.transition_reads,
                           avoid_slow=not args.no_avoid_slow,
                           **guard_config(args))
    app = make_app(config)
    server = make_server(serve_front(app, config), config)
    if sockets:  # --processes N: the socket was bound before the fork
        server.add_sockets(sockets)
    else:
        server.listen(args.port, address=args.host)
    logging.getLogger("filetracker.gateway").info("gateway on http://%s:%d, nodes %s",
                                                   args.host, args.port, ",".join(nodes))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # learn the ring early so the first request does not pay for it; nodes may still be starting
    asyncio.ensure_future(app.services.view.refresh())
    # where data still waits to move (ring changes, hints): cluster/gateway/holders.py
    app.services.spawn(poll_forever(app.services.view, app.services.client))
    # nodes much slower than the others are read last; this notices when they are fast again
    # (and keeps every live member's answer time fresh, the yardstick of the others)
    if config.avoid_slow:
        view = app.services.view
        app.services.spawn(probe_forever(view.latency, app.services.fetches.lookup, view.live_urls))
    await stop.wait()
    log = logging.getLogger("filetracker.gateway")
    log.info("shutting down")
    server.stop()   # no new connections; the requests in progress may end, for SHUTDOWN_GRACE at most
    left = await server.drain(app.settings[ACTIVITY_SETTING], SHUTDOWN_GRACE)
    if left:
        log.warning("%d requests did not finish within %ss; their connections were closed", left, SHUTDOWN_GRACE)
    app.services.close()


def main(argv=None):
    args, nodes = parse_args(sys.argv[1:] if argv is None else argv)
    eventloop.check_or_exit("filetracker-gateway")
    fdlimit.raise_fd_limit()
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    observe.setup_logging(args.log_format)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    warning = open_access_warning("filetracker-gateway", args.host, args.port, args.auth_file, "reads and writes")
    if warning:
        logging.getLogger("cluster.gateway").warning(warning)
    try:
        if args.processes > 1:
            return run_processes(args.processes, args.port, args.host,
                                 lambda sockets: eventloop.run(serve(args, nodes, sockets)))
        eventloop.run(serve(args, nodes))
    except OSError as exc:
        print("filetracker-gateway: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
