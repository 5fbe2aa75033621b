#!/usr/bin/env bash
# Set up (idempotent) and serve every application in serve_config.yaml on a local
# embedded Ray cluster: HTTP on :8000, Ray dashboard on :8265.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
# `facegraph serve` (serve_app/cli.py): production weights where they can be had (mirror
# or download); those that cannot (here: SegFormer, det_10g, w600k_r50 are not
# reachable) are served by their test stand-ins from assets/manifest.yaml, with a
# warning, and each app's health route names them. Then `serve run serve_config.yaml`
# with RAY_AUTH_MODE=disabled (local single-user cluster). Options go to `serve run`.
exec .venv/bin/python -m serve_app.cli serve "$@"
