#!/usr/bin/env bash
# Set up (idempotently) and start/stop a local cluster: 3 nodes + a gateway on
# loopback, data under ./local-cluster.   deploy/local-cluster.sh [start|status|stop]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/filetracker-node ] || bash scripts/setup.sh --runtime
exec .venv/bin/python deploy/local_cluster.py "${@:-start}"
