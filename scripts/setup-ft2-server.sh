#!/usr/bin/env bash
# Create (idempotently) a virtual environment holding the published
# filetracker 2.x *server* (`filetracker[server]==2.3.3`), used by the
# benchmark (bench/run.py) and by migration tests (tests/support/upstream.py).
#
#   bash scripts/setup-ft2-server.sh [VENV_DIR]    # default: .venv-ft2server
#
# The 2.x server needs bsddb3, a C extension that builds against Berkeley DB:
# Debian's `libdb-dev` (libdb 5.3) plus a compiler and Python headers.
# bsddb3's setup.py finds the library through BERKELEYDB_DIR (headers in
# $BERKELEYDB_DIR/include, library in the multiarch lib folder, which it also
# searches).  YES_I_HAVE_THE_RIGHT_TO_USE_THIS_BERKELEY_DB_VERSION only matters
# for Berkeley DB >= 6 (AGPL); it is harmless with 5.3 and set for hosts that
# have a newer libdb.
#
# The server script runs `gunicorn` found on PATH, so start it with the venv's
# bin folder first on PATH, and from a working folder outside this repository:
# gunicorn puts its working folder on sys.path, so from the repo root it would
# import our `filetracker` package instead (tests/support/upstream.py does both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${1:-$ROOT/.venv-ft2server}
PY=${PYTHON:-python3}
FT2_SPEC='filetracker[server]==2.3.3'
# -I (isolated) so that our own `filetracker` package in the current folder is
# never imported instead of the 2.x one.
CHECK='import bsddb3, gevent, filetracker.servers.run'

log() { printf '[setup-ft2-server] %s\n' "$*" >&2; }

# Already done?  (the import proves bsddb3 was built and links to libdb)
if [ -x "$VENV/bin/filetracker-server" ] && [ -x "$VENV/bin/gunicorn" ] \
   && "$VENV/bin/python" -I -c "$CHECK" 2>/dev/null; then
  log "ready: $VENV"
  exit 0
fi

apt_packages=(libdb-dev build-essential python3-dev)
if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  missing=()
  for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      log "missing system packages (run as root or install them): ${missing[*]}"
      exit 1
    fi
    log "installing system packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

export BERKELEYDB_DIR=${BERKELEYDB_DIR:-/usr}
export YES_I_HAVE_THE_RIGHT_TO_USE_THIS_BERKELEY_DB_VERSION=1
log "installing $FT2_SPEC (builds bsddb3 against libdb)"
"$VENV/bin/python" -m pip install -q "$FT2_SPEC" 2>&1 | { grep -v '^WARNING: Location' || true; }

"$VENV/bin/python" -I -c "$CHECK" || { log "install failed"; exit 1; }
log "ready: $VENV"
