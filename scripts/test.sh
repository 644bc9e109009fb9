#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, then pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m faults`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The published 2.x server (migration tests); its tests skip if this cannot be built.
bash scripts/setup-ft2-server.sh >/dev/null 2>&1 || echo "[test] 2.x server venv unavailable: migration tests will skip" >&2
export FT2_PYTHON="$PWD/.venv-ft2/bin/python"
mkdir -p artifacts
.venv/bin/ruff check filetracker cluster tests deploy scripts bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
