#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, then pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m faults`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p artifacts
# The published 2.x server (migration and compatibility tests). Its tests skip if it cannot be
# built (they fail instead when FT_REQUIRE_INTEROP is set, as .ci/run does).
bash scripts/setup-ft2-server.sh >artifacts/setup-ft2-server.log 2>&1 \
    || echo "[test] 2.x server venv unavailable (artifacts/setup-ft2-server.log): its tests will skip" >&2
export FT2_PYTHON="$PWD/.venv-ft2/bin/python"
# test artifacts (status-page screenshots) land here, beside the logs CI keeps
export FILETRACKER_TEST_ARTIFACTS="$PWD/artifacts"
.venv/bin/ruff check filetracker cluster tests deploy scripts bench
# Two workers (FT_TEST_WORKERS; 0 runs everything in this process, without pytest-xdist), a test
# file per worker at a time, in collection order (tests/conftest.py puts the files with slow tests
# first): most tests wait on real processes, so two workers take about half the time on 2 cores.
workers=(-n "${FT_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
if [ "${FT_TEST_WORKERS:-2}" = 0 ]; then workers=(); fi
exec .venv/bin/python -m pytest -q -rsx -p no:cacheprovider --durations=15 "${workers[@]}" "$@"
