#!/usr/bin/env bash
# One install step: a virtualenv in .venv with the pinned stack, then the assets.
#   scripts/setup.sh [ASSET_SET]     ASSET_SET: test (default) | production | bench
# Re-running is cheap: the install is skipped while the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
asset_set="${1:-test}"
py="${PYTHON:-python3.11}"

# Wheelhouse: a folder of wheels no package index serves for this stack (PyTorch3D),
# like the asset mirror. Default ../shared/wheels when it exists; "none" skips it. Without
# one, PyTorch3D is not installed and MeshRenderer uses its plain-torch backend.
wheelhouse="${FACEGRAPH_WHEELHOUSE:-}"
if [ -z "$wheelhouse" ] && [ -d ../shared/wheels ]; then wheelhouse=../shared/wheels; fi
[ "$wheelhouse" = none ] && wheelhouse=""
if [ -n "$wheelhouse" ] && [ ! -d "$wheelhouse" ]; then
  echo "FACEGRAPH_WHEELHOUSE=$wheelhouse is not a folder" >&2
  exit 1
fi

stamp=.venv/.facegraph-pins
# The stamp covers the pins, this script and the wheelhouse choice (on or off, and the
# digests of its PyTorch3D wheels), so switching or refilling the wheelhouse re-installs.
want=$({ cat requirements.txt requirements-dev.txt constraints.txt scripts/setup.sh
         if [ -n "$wheelhouse" ]; then
           echo "wheelhouse=on"
           (cd "$wheelhouse" && sha256sum pytorch3d-*.whl 2>/dev/null) || true
         else
           echo "wheelhouse=off"
         fi
       } | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing the pinned stack into .venv"
  # Some machines' pip config names index folders that do not exist; pip warns once per
  # package about them. Drop that noise, keep every other message.
  exec 3>&2 2> >(grep -v "is ignored: it is neither a file nor a directory" >&3)
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
  # torch first: the CPU wheel; everything after is constrained to it so pip never
  # swaps in a multi-GB CUDA build.
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
  printf 'torch==2.13.0\n' > .venv/torch-constraint.txt
  # requirements-dev.txt: the runtime set (requirements.txt) plus the test and lint tools.
  .venv/bin/pip install -q --disable-pip-version-check \
    -r requirements-dev.txt -c constraints.txt -c .venv/torch-constraint.txt
  # mediapipe pulls opencv-contrib-python and insightface pulls opencv-python; all three
  # write the same cv2/ folder. Keep exactly one: headless 4.11 (OpenCV 5 has no
  # CascadeClassifier).
  .venv/bin/pip uninstall -q -y opencv-python opencv-contrib-python opencv-python-headless || true
  .venv/bin/pip install -q --disable-pip-version-check --no-deps opencv-python-headless==4.11.0.86
  # PyTorch3D (the renderer of record) has no wheel on the index: take it from the
  # wheelhouse, under the same torch pin; its runtime dependency iopath comes from
  # requirements.txt. No wheelhouse: remove a PyTorch3D left by an earlier install so
  # the setting decides which renderer runs.
  if [ -n "$wheelhouse" ]; then
    .venv/bin/pip install -q --disable-pip-version-check --no-index --find-links "$wheelhouse" pytorch3d \
      -c constraints.txt -c .venv/torch-constraint.txt
    .venv/bin/python -c "import pytorch3d.renderer"
  else
    .venv/bin/pip uninstall -q -y pytorch3d 2>/dev/null || true
  fi
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  .venv/bin/python -c "import cv2; assert hasattr(cv2, 'CascadeClassifier'), cv2.__version__"
  echo "$want" > "$stamp"
  exec 2>&3 3>&-
fi

# The `facegraph` command (pyproject.toml [project.scripts]) in a venv installed before it existed.
[ -x .venv/bin/facegraph ] || .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

# Assets: from a mirror directory when there is one (air-gapped installs), else the
# source URLs. sha256 is verified either way.
mirror="${FACEGRAPH_ASSETS_MIRROR:-}"
if [ -z "$mirror" ] && [ -d ../shared/assets ]; then mirror=../shared/assets; fi
# FACEGRAPH_ALLOW_UNPINNED=1 accepts production files whose sha256 is not yet in the
# manifest (printing their digests to record); without it they are refused.
unpinned=""
[ "${FACEGRAPH_ALLOW_UNPINNED:-0}" = 1 ] && unpinned=--allow-unpinned
.venv/bin/python -m serve_app.config.assets fetch --set "$asset_set" ${mirror:+--mirror "$mirror"} $unpinned
