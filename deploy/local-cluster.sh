#!/usr/bin/env bash
# Set up (idempotently) and run a local cluster: 3 nodes + a gateway on loopback,
# everything under ./local-cluster ($FILETRACKER_LOCAL_DIR), gateway on port 9400
# ($FILETRACKER_LOCAL_PORT).
#   deploy/local-cluster.sh [start|status|stop|kill NAME|add-node|remove-node NAME|url]
set -euo pipefail
export FILETRACKER_LOCAL_CALLER_DIR="$PWD" FILETRACKER_LOCAL_SCRIPT="$0"   # printed paths work from here
cd "$(dirname "$0")/.."
[ -x .venv/bin/filetracker-node ] || bash scripts/setup.sh --runtime
exec .venv/bin/python deploy/local_cluster.py "${@:-start}"
