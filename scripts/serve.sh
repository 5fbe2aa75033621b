#!/usr/bin/env bash
# Set up (idempotent) and serve every application in serve_config.yaml on a local
# embedded Ray cluster: HTTP on :8000, Ray dashboard on :8265.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
# Production weights where they can be had (mirror or download). Those that cannot
# (here: SegFormer, det_10g, w600k_r50 are not reachable) are served by their test
# stand-ins from assets/manifest.yaml; the log and each app's health route name them.
.venv/bin/python -m serve_app.assets fetch --set production ${FACEGRAPH_ASSETS_MIRROR:+--mirror "$FACEGRAPH_ASSETS_MIRROR"} \
  || echo "WARNING: some production assets are missing; serving their test stand-ins (random SegFormer weights: masks are not meaningful)."
export FACEGRAPH_ALLOW_STAND_INS="${FACEGRAPH_ALLOW_STAND_INS:-1}"
# Local single-user cluster: no token auth on the dashboard (Ray 2.60 turns it on by default).
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
exec .venv/bin/serve run serve_config.yaml "$@"
