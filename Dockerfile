# syntax=docker/dockerfile:1.7
# FaceGraph images for KubeRay (cluster.yaml, cluster.gpu.yaml) or a plain `docker run`.
# One Dockerfile for Docker (BuildKit) and podman; `facegraph image build` drives either:
#   facegraph image build [--target cpu|gpu] [--engine podman|docker] [--base-image IMAGE]
#                         [--ca-bundle FILE] [--wheelhouse DIR] [--assets-mirror DIR]
# By hand, the same build is:
#   docker build --target cpu -t facegraph:0.1.0 \
#     --build-context wheelhouse=DIR --build-context assets-mirror=DIR --secret id=site_ca,src=FILE .
#   (podman: the same options plus --format docker, else HEALTHCHECK is dropped)
#
# Build inputs that never reach the runtime stages:
#   wheelhouse     (named build context) wheels no index serves: torch's CPU build, PyTorch3D
#   assets-mirror  (named build context) a local copy of the asset sources (air-gapped sites)
#   site_ca        (build secret) a CA bundle for TLS-inspecting proxies, used by pip only
# Each is empty unless given: the stages below of the same name stand for them.
#
# Run: podman run --init --shm-size=2g --network host facegraph:0.1.0
#      docker run --init --shm-size=2g -p 8000:8000 facegraph:0.1.0
# Ray's object store lives in /dev/shm: the 64 MB container default sends it to disk.
# Read-only root filesystem: add --read-only --tmpfs /tmp (Ray's session dir and scratch).

ARG BASE_IMAGE=python:3.11-slim-bookworm
# The CUDA-toolkit build of PyTorch3D for the GPU image: none (default; the GPU image then
# renders with the plain-torch MeshRenderer backend) or cuda (needs NVIDIA's apt repository).
ARG PYTORCH3D=none
# The one OpenCV both venvs keep (as scripts/setup.sh: OpenCV 5 has no CascadeClassifier).
ARG OPENCV_VERSION=4.11.0.86

FROM scratch AS wheelhouse
FROM scratch AS assets-mirror

# ---- builder: compilers and CPython headers, the venv in /app/.venv ----
FROM ${BASE_IMAGE} AS builder-common
# g++ for pydensecrf2 (Cython, C++); binutils' strip for debug sections. Debian's own
# python3.11 (the debootstrap base) needs python3.11-dev for its headers; the official
# python image has them under /usr/local.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ binutils \
      $( [ -e /usr/local/include/python3.11/Python.h ] || echo python3.11-dev ) \
 && rm -rf /var/lib/apt/lists/*
# pip reads the site CA only when one is given (build secret site_ca).
COPY deploy/image/site-ca.sh /usr/local/lib/facegraph/site-ca.sh
ENV VIRTUAL_ENV=/app/.venv PATH=/app/.venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python3.11 -m venv /app/.venv
RUN --mount=type=secret,id=site_ca,required=false . /usr/local/lib/facegraph/site-ca.sh \
 && pip install -q --upgrade pip setuptools wheel
# The project itself, editable: the venv points at /app/serve_app and /app/deployments,
# which the runtime stage copies in last, so a code change rebuilds no venv layer.
COPY pyproject.toml ./
RUN mkdir serve_app deployments && touch serve_app/__init__.py deployments/__init__.py \
 && pip install -q --no-deps --no-build-isolation -e . && rm -r serve_app deployments
COPY requirements.txt constraints.txt ./

# ---- CPU venv: torch's CPU build, pinned with its local version so that pip fails at
# once when no wheelhouse or index offers it (PyPI's torch==2.13.0 is the 527 MB CUDA
# build and pulls ~3 GB of NVIDIA wheels).
FROM builder-common AS builder-cpu
ARG OPENCV_VERSION
ARG TORCH_VERSION=2.13.0+cpu
# Where the CPU build comes from when the wheelhouse lacks it; empty: the wheelhouse only
# (`facegraph image build` empties it when its wheelhouse has torch: an unreachable extra
# index costs pip five retries for every package it resolves).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=site_ca,required=false . /usr/local/lib/facegraph/site-ca.sh \
 && pip install -q --find-links /wheelhouse ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      "torch==${TORCH_VERSION}" -c constraints.txt \
 && echo "torch==${TORCH_VERSION}" > /app/.venv/torch-constraint.txt \
 && python -c "import torch; assert not torch.version.cuda, torch.__version__"
# The runtime set (requirements.txt; dev tools are in requirements-dev.txt), then exactly
# one OpenCV (mediapipe and insightface each pull another into the same cv2/ folder),
# then PyTorch3D when the wheelhouse has it (else MeshRenderer's plain-torch backend).
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=site_ca,required=false . /usr/local/lib/facegraph/site-ca.sh \
 && pip install -q --find-links /wheelhouse -r requirements.txt -c constraints.txt -c .venv/torch-constraint.txt \
 && pip uninstall -q -y opencv-python opencv-contrib-python opencv-python-headless \
 && pip install -q --no-deps "opencv-python-headless==${OPENCV_VERSION}" \
 && if ls /wheelhouse/pytorch3d-*.whl >/dev/null 2>&1; then \
      pip install -q --no-index --find-links /wheelhouse pytorch3d -c .venv/torch-constraint.txt \
      && python -c "import pytorch3d.renderer"; \
    fi \
 && python -c "import cv2; assert hasattr(cv2, 'CascadeClassifier'), cv2.__version__" \
 && python -c "import mediapipe, onnxruntime, openvino, pydensecrf.densecrf, ray.serve, transformers"
COPY deploy/image/slim-venv.sh /usr/local/lib/facegraph/slim-venv.sh
RUN sh /usr/local/lib/facegraph/slim-venv.sh /app/.venv

# ---- GPU venv: PyPI's torch 2.13.0 (CUDA 13.0), onnxruntime-gpu of the pinned
# onnxruntime with its CUDA/cuDNN wheels, PyTorch3D from the optional stage below.
FROM ${BASE_IMAGE} AS pytorch3d-none
RUN mkdir /wheels

FROM builder-common AS pytorch3d-cuda
ARG CUDA_APT_VERSION=13-0
ARG PYTORCH3D_REF=9381c4016376345bb795b97c45a6c2de66db354a
# Volta to Blackwell; trim to your GPUs to build faster.
ARG TORCH_CUDA_ARCH_LIST="7.0;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
RUN apt-get update \
 && apt-get install -y --no-install-recommends git curl ca-certificates \
 && curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb && apt-get update \
 && apt-get install -y --no-install-recommends cuda-toolkit-${CUDA_APT_VERSION} \
 && rm -rf /var/lib/apt/lists/*
ENV CUDA_HOME=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH \
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} MAX_JOBS=4
RUN --mount=type=secret,id=site_ca,required=false . /usr/local/lib/facegraph/site-ca.sh \
 && pip install -q torch==2.13.0 -c constraints.txt \
 && python -c "import torch; assert torch.version.cuda, 'expected the CUDA torch'" \
 && pip wheel -q --no-deps --no-build-isolation -w /wheels \
      "git+https://github.com/facebookresearch/pytorch3d.git@${PYTORCH3D_REF}"

FROM pytorch3d-${PYTORCH3D} AS pytorch3d-wheel

FROM builder-common AS builder-gpu
ARG OPENCV_VERSION
RUN --mount=type=secret,id=site_ca,required=false . /usr/local/lib/facegraph/site-ca.sh \
 && pip install -q torch==2.13.0 -c constraints.txt \
 && echo "torch==2.13.0" > /app/.venv/torch-constraint.txt \
 && python -c "import torch; assert torch.version.cuda, torch.__version__"
RUN --mount=type=bind,from=pytorch3d-wheel,source=/wheels,target=/p3d \
    --mount=type=secret,id=site_ca,required=false . /usr/local/lib/facegraph/site-ca.sh \
 && pip install -q -r requirements.txt -c constraints.txt -c .venv/torch-constraint.txt \
 && pip uninstall -q -y opencv-python opencv-contrib-python opencv-python-headless onnxruntime \
 && pip install -q --no-deps "opencv-python-headless==${OPENCV_VERSION}" \
 && pip install -q "onnxruntime-gpu[cuda,cudnn]==$(sed -n 's/^onnxruntime==//p' requirements.txt)" \
      -c constraints.txt -c .venv/torch-constraint.txt \
 && if ls /p3d/pytorch3d-*.whl >/dev/null 2>&1; then \
      pip install -q --no-index --find-links /p3d pytorch3d -c .venv/torch-constraint.txt; \
    fi \
 && python -c "import onnxruntime; assert 'CUDAExecutionProvider' in onnxruntime.get_available_providers()"
COPY deploy/image/slim-venv.sh /usr/local/lib/facegraph/slim-venv.sh
RUN sh /usr/local/lib/facegraph/slim-venv.sh /app/.venv

# ---- assets: the production set, test stand-ins where production files cannot be had,
# from the mirror when one is given. Generated assets (the assembled BFM, stand-in parser
# weights) need the venv, so this runs on the CPU builder; the files suit both images.
FROM builder-cpu AS assets
COPY pyproject.toml ./
COPY assets ./assets
COPY serve_app ./serve_app
COPY deployments ./deployments
# ALLOW_STAND_INS=1: production files missing from the mirror are served by their test
# stand-ins (named in /healthz); 0: the build fails unless the whole production set is in.
ARG ALLOW_STAND_INS=1
ARG ALLOW_UNPINNED=0
# The files are root's and readable by all (the fetch writes 0600 temporaries): the server
# runs as `facegraph`. With a mirror given, nothing is downloaded: urllib's proxy points at a closed port, so a
# file the mirror lacks fails at once instead of trying its source URLs.
RUN --mount=type=bind,from=assets-mirror,target=/mirror \
    set -e; \
    if [ -n "$(ls -A /mirror)" ]; then mirror="--mirror /mirror"; export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9; fi; \
    unpinned=""; [ "$ALLOW_UNPINNED" = 1 ] && unpinned=--allow-unpinned; \
    python -m serve_app.config.assets fetch --set test --dest /app/.assets $mirror; \
    if ! python -m serve_app.config.assets fetch --set production --dest /app/.assets $mirror $unpinned; then \
      [ "$ALLOW_STAND_INS" = 1 ] || { echo "production assets missing and ALLOW_STAND_INS=0" >&2; exit 1; }; \
      echo "production assets missing: their test stand-ins are served (named in /healthz)"; \
    fi; \
    chmod -R a+rX /app/.assets

# ---- runtime: the base image, the venv, the code and the assets; no compiler, no dev tools ----
FROM ${BASE_IMAGE} AS runtime
ARG ALLOW_STAND_INS=1
# /data: the people gallery's SQLite files (FACEGRAPH_DATA_DIR), the one place the server
# writes to keep; mount a volume there (with a read-only root, something must be mounted),
# or set FACEGRAPH_DATABASE_URL for PostgreSQL.
RUN useradd --create-home --uid 1000 --user-group facegraph \
 && mkdir /data && chown facegraph:facegraph /data
WORKDIR /app
ENV VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACEGRAPH_ASSETS_CACHE=/app/.assets \
    FACEGRAPH_ALLOW_STAND_INS=${ALLOW_STAND_INS} \
    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_app.web.edge:proxy_middlewares \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    FACEGRAPH_ONNX_CACHE=/tmp/.cache/facegraph/parser_onnx \
    FACEGRAPH_DATA_DIR=/data
EXPOSE 8000 8265
# The model tier's root health route: healthy while every application is RUNNING and every
# model answers (status "ok"; "degraded" names what is not). Python, not curl: one tool less.
# FACEGRAPH_HEALTH_URL: where a config that moves Serve's port (host networking) serves it.
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
  CMD ["python", "-c", "import json, os, sys, urllib.request as u; url = os.environ.get('FACEGRAPH_HEALTH_URL', 'http://127.0.0.1:8000/healthz'); sys.exit(json.load(u.urlopen(url, timeout=8)).get('status') != 'ok')"]
USER facegraph

# ---- CPU image: torch's CPU build, onnxruntime/OpenVINO, PyTorch3D when the wheelhouse had it ----
FROM runtime AS cpu
# Writable scratch (Ray's session dir, caches) is /tmp only, so the root filesystem can be
# mounted read-only with a tmpfs on /tmp. The venv, assets and code belong to root: read-only
# to the server. Largest and least often changed first, so a code change rebuilds small layers.
COPY --from=builder-cpu /app/.venv /app/.venv
COPY --from=assets /app/.assets /app/.assets
COPY pyproject.toml requirements.txt constraints.txt serve_config.yaml serve_config.gpu.yaml ./
COPY assets ./assets
COPY deployments ./deployments
COPY serve_app ./serve_app
CMD ["facegraph", "serve", "--no-fetch"]

# ---- GPU image: CUDA torch and onnxruntime-gpu; the NVIDIA driver comes from the node ----
FROM runtime AS gpu
COPY --from=builder-gpu /app/.venv /app/.venv
COPY --from=assets /app/.assets /app/.assets
COPY pyproject.toml requirements.txt constraints.txt serve_config.yaml serve_config.gpu.yaml ./
COPY assets ./assets
COPY deployments ./deployments
COPY serve_app ./serve_app
CMD ["facegraph", "serve", "--no-fetch", "--config", "serve_config.gpu.yaml"]
