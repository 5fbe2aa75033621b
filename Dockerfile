# FaceGraph images for KubeRay (cluster.yaml, cluster.gpu.yaml) or `serve run`.
#   docker build --target cpu -t facegraph:0.1.0 .        CPU torch, onnxruntime
#   docker build --target gpu -t facegraph:0.1.0-gpu .    CUDA torch, onnxruntime-gpu, PyTorch3D with CUDA kernels
# Both run the install CI runs (scripts/setup.sh production: the pinned stack, then the
# production asset fetch), so pods never download weights; both run as a non-root user
# and check the model tier's GET /healthz.
#   --build-arg ASSETS_MIRROR=/mirror   air-gapped: COPY a mirror in first
# The SegFormer and buffalo_l files have no sha256 pinned in assets/manifest.yaml yet:
# build with --build-arg ALLOW_UNPINNED=1 once, record the printed digests, rebuild.

# ---- PyTorch3D built from source against the CUDA torch (no index serves that wheel) ----
# torch 2.13.0 on PyPI is built with CUDA 13.0, so the compiler is CUDA 13.0's, on the
# same Python 3.11 / Debian 12 as the runtime image.
FROM python:3.11-slim-bookworm AS pytorch3d-cuda
ARG CUDA_APT_VERSION=13-0
ARG PYTORCH3D_REF=9381c4016376345bb795b97c45a6c2de66db354a
# Volta to Blackwell; trim to your GPUs to build faster.
ARG TORCH_CUDA_ARCH_LIST="7.0;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential git curl ca-certificates \
 && curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb && apt-get update \
 && apt-get install -y --no-install-recommends cuda-toolkit-${CUDA_APT_VERSION} \
 && rm -rf /var/lib/apt/lists/*
ENV CUDA_HOME=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH \
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} MAX_JOBS=4
RUN python -m pip install --no-cache-dir torch==2.13.0 setuptools wheel \
 && python -c "import torch; assert torch.version.cuda, 'expected the CUDA torch'; print('torch CUDA', torch.version.cuda)" \
 && python -m pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \
      "git+https://github.com/facebookresearch/pytorch3d.git@${PYTORCH3D_REF}"

# ---- what both images share: a non-root user owns /app and runs the install ----
FROM python:3.11-slim-bookworm AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libgl1 libglib2.0-0 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 facegraph \
 && mkdir /app && chown facegraph:facegraph /app
WORKDIR /app
USER facegraph
COPY --chown=facegraph:facegraph requirements.txt constraints.txt pyproject.toml ./
COPY --chown=facegraph:facegraph scripts ./scripts
COPY --chown=facegraph:facegraph assets ./assets
COPY --chown=facegraph:facegraph serve_app ./serve_app
COPY --chown=facegraph:facegraph deployments ./deployments
COPY --chown=facegraph:facegraph bench ./bench
COPY --chown=facegraph:facegraph serve_config.yaml serve_config.gpu.yaml ./
ARG ASSETS_MIRROR=""
ARG ALLOW_UNPINNED=0
ENV PYTHON=python3.11 \
    FACEGRAPH_ASSETS_MIRROR=${ASSETS_MIRROR} \
    FACEGRAPH_ALLOW_UNPINNED=${ALLOW_UNPINNED} \
    FACEGRAPH_ASSETS_CACHE=/app/.assets \
    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_app.web.edge:proxy_middlewares \
    FACEGRAPH_ALLOW_STAND_INS=0 \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
EXPOSE 8000 8265
# The model tier's root health route: healthy while every application is RUNNING and
# every model answers (status "ok"; "degraded" names what is not).
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/healthz | grep -q '"status":"ok"' || exit 1

# ---- CPU image: torch's CPU wheel (no CUDA libraries), onnxruntime ----
FROM base AS cpu
RUN PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu FACEGRAPH_WHEELHOUSE=none scripts/setup.sh production \
 && .venv/bin/python -c "import torch; assert not torch.version.cuda, torch.__version__"
USER facegraph
CMD ["facegraph", "serve", "--no-fetch"]

# ---- GPU image: CUDA torch (PyPI's default torch 2.13.0 build), onnxruntime-gpu of the
# pinned onnxruntime version with its CUDA/cuDNN wheels, PyTorch3D from the stage above.
# The NVIDIA driver comes from the node (NVIDIA container toolkit / GPU operator).
FROM base AS gpu
COPY --from=pytorch3d-cuda /wheels /wheels
RUN FACEGRAPH_WHEELHOUSE=/wheels scripts/setup.sh production \
 && ort="$(sed -n 's/^onnxruntime==//p' requirements.txt)" \
 && .venv/bin/pip uninstall -y onnxruntime \
 && .venv/bin/pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]==${ort}" -c constraints.txt \
      -c .venv/torch-constraint.txt \
 && .venv/bin/python -c "import torch, onnxruntime, pytorch3d.renderer; assert torch.version.cuda; \
assert 'CUDAExecutionProvider' in onnxruntime.get_available_providers()"
USER facegraph
CMD ["facegraph", "serve", "--no-fetch", "--config", "serve_config.gpu.yaml"]
