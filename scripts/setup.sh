#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian machine, idempotently:
# system packages (when root), the project's venv (.venv) with dev extras, and
# a separate venv (.venv-ft2) holding the published filetracker 2.x client,
# used only by interoperability tests.
#   bash scripts/setup.sh            # venv + dev extras
#   bash scripts/setup.sh --runtime  # venv only (what the local cluster and filetracker-fuse need)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mode=${1:-dev}

log() { printf '[setup] %s\n' "$*" >&2; }

apt_packages=(fuse3 libfuse3-dev)
apt_packages+=(faketime)  # libfaketime: the clock-skew test of tests/faults
apt_packages+=(rsync)  # the FUSE test that rsyncs a tree into a mount (tests/fuse/test_fuse_semantics.py)
# headless browser for the status page test (tests/ops/test_status_page.py)
apt_packages+=(chromium)
if [ "$mode" != "--runtime" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# pip's output only when it fails (a successful editable install prints a setuptools banner)
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    log "that step failed (output above); checking what is installed"
  fi
}

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] && ! "$PY" -c 'import ensurepip' 2>/dev/null; then
  # Debian's python3 makes venvs only with python3-venv installed
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing system package: python3-venv"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    log "$PY cannot make a virtual environment: install Debian's python3-venv (as root: apt-get install python3-venv)"
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$mode" = "--runtime" ]; then
  quiet .venv/bin/python -m pip install -q -e '.[fuse]'
else
  quiet .venv/bin/python -m pip install -q -e '.[dev]'
  if [ ! -x .venv-ft2/bin/python ]; then
    log "creating .venv-ft2 (published filetracker 2.x client, for interop tests only)"
    "$PY" -m venv .venv-ft2
    quiet .venv-ft2/bin/python -m pip install -q requests six
    quiet .venv-ft2/bin/python -m pip install -q --no-deps 'filetracker==2.3.3'
  fi
fi
.venv/bin/python -c 'import filetracker, cluster' || { log "install failed"; exit 1; }
log "ready: $ROOT/.venv"
