#!/usr/bin/env bash
# Set up (idempotent: the pinned stack and the test assets), then run the whole suite:
# unit, model (real weights), graph (Ray Serve over HTTP on 127.0.0.1) and batch tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
export RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest -q "$@"
