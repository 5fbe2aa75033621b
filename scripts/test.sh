#!/usr/bin/env bash
# Set up (idempotent: the pinned stack and the test assets), then run the whole suite:
# ruff (lint + format check), then unit, model (real weights), graph (Ray Serve over
# HTTP on 127.0.0.1), batch and fault tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/install_browser.sh  # chromium for the demo page's browser test, when missing
scripts/start_test_postgres.sh install  # Debian's postgresql for the gallery's tests (each starts its own server)
# Style first: the linter and the formatter configured in pyproject.toml, clean on the tree.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest -q "$@"
