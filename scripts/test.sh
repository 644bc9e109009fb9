#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, then pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m faults`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FT2_PYTHON="$PWD/.venv-ft2/bin/python"
mkdir -p artifacts
.venv/bin/ruff check filetracker cluster tests deploy scripts bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
