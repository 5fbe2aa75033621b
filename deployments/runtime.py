"""The runtimes a model runs on, in one place: torch, ONNX Runtime and OpenVINO (and
PyTorch3D's rasteriser), on the CPU or CUDA. Every model that offers a choice asks
`resolve_runtime` what its `runtime: auto` (or `backend: auto`) means for its placement,
and builds its session or torch device with the helpers here. Nothing heavy is imported
at module import: torch, onnxruntime and openvino load inside the functions that need
them, so pipelines and ingresses can import model interfaces without them.

Placement rule: a replica uses CUDA when Ray assigned it a GPU, else the CPU with
intra-op threads = its CPU share (one replica never oversubscribes the node).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from deployments.types import Placement

# ---- which runtime: `auto` resolved the same way for every model ----------------------

# Runtimes that are optional installs, by the module whose import proves them usable (an
# import, not a lookup: a PyTorch3D wheel built for another torch is found but fails to load).
# Every other runtime a model offers (torch, ONNX Runtime) is in requirements.txt.
OPTIONAL_RUNTIMES = {"openvino": "openvino", "pytorch3d": "pytorch3d.renderer"}
INSTALL_HINTS = {"pytorch3d": "install it from the wheelhouse: FACEGRAPH_WHEELHOUSE, scripts/setup.sh"}


def installed(runtime: str) -> bool:
    """Whether this runtime can be used in this process."""
    module = OPTIONAL_RUNTIMES.get(runtime)
    if module is None:
        return True
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@dataclass(frozen=True, kw_only=True)
class Runtimes:
    """The runtimes one model offers under one config key, and what `auto` means there:
    the first installed runtime of the preference for the placement's device."""

    model: str  # for messages: "ArcFace"
    key: str  # the config field serve_config.yaml sets: "runtime" | "backend"
    offered: tuple[str, ...]  # what a config may name, besides "auto"
    auto_cpu: tuple[str, ...]  # auto on a CPU replica, in order of preference
    auto_cuda: tuple[str, ...]  # auto on a GPU replica, in order of preference

    @property
    def choices(self) -> tuple[str, ...]:
        return (*self.offered, "auto")


def resolve_runtime(choice: str, placement: Placement, runtimes: Runtimes) -> str:
    """The runtime a replica really uses. An explicit choice stays as it is (refused when
    not installed); `auto` is decided by where the replica was placed and what is installed."""
    if choice not in runtimes.choices:
        raise ValueError(f"{runtimes.model} {runtimes.key} {choice!r}: expected one of {', '.join(runtimes.choices)}")
    if choice != "auto":
        if not installed(choice):
            hint = INSTALL_HINTS.get(choice, "install it")
            raise RuntimeError(
                f"{runtimes.model} {runtimes.key} {choice!r} asked for but {choice} is not importable ({hint})"
            )
        return choice
    preference = runtimes.auto_cuda if placement.device == "cuda" else runtimes.auto_cpu
    for runtime in preference:
        if installed(runtime):
            return runtime
    raise RuntimeError(f"{runtimes.model}: none of {', '.join(preference)} is installed for {placement.device}")


# ---- ONNX Runtime --------------------------------------------------------------------


def session_options(placement: Placement):
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    # One replica = its share of cores: intra-op threads follow Ray's num_cpus and no
    # inter-op pool oversubscribes the node.
    opts.intra_op_num_threads = max(1, placement.threads)
    opts.inter_op_num_threads = 1
    return opts


def providers(placement: Placement) -> list[str]:
    if placement.device == "cuda":
        import onnxruntime

        # onnxruntime-gpu finds CUDA and cuDNN in the pip `nvidia-*` packages (or torch's)
        # only once they are loaded; without this the CUDA provider silently falls back.
        if hasattr(onnxruntime, "preload_dlls"):
            onnxruntime.preload_dlls()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def active_provider(session) -> str:
    """The execution provider a session really runs on: the first one ONNX Runtime kept
    (CPUExecutionProvider when the CUDA one was asked for but could not load)."""
    return session.get_providers()[0]


# ---- OpenVINO ------------------------------------------------------------------------
# OpenVINO: an ONNX model compiled by OpenVINO for the CPU, behind the part of ONNX Runtime's
# InferenceSession interface that insightface's runners call (get_inputs, get_outputs,
# run, get_providers). So a recogniser built by insightface runs on either runtime with
# the same pre- and post-processing.
#
# Why: on the CPUs here OpenVINO runs the 128-d MobileFaceNet recogniser about 3x faster
# than ONNX Runtime at one thread on real-range (0-255) crops, 4.0 vs 13 ms per face, with
# the same fp32 results (cosine 1.0). The detectors gain nothing (det_500m 17.6 vs 15.7
# ms), so only ArcFace offers it.
#

PROVIDER = "OpenVINO CPU"  # what the health route reports, as ONNX Runtime's provider names


@dataclass(frozen=True)
class TensorInfo:
    """What ONNX Runtime's NodeArg offers the runners: a name and a shape (ints for
    fixed dimensions, strings for dynamic ones, as ONNX Runtime writes them)."""

    name: str
    shape: list


def _info(port) -> TensorInfo:
    shape = [int(d.get_length()) if d.is_static else str(d) for d in port.get_partial_shape()]
    return TensorInfo(port.get_any_name(), shape)


class OpenVINOSession:
    def __init__(self, model_path: str, placement: Placement = Placement()):
        import openvino

        if placement.device != "cpu":
            raise ValueError("OpenVINOSession runs on the CPU only; GPU replicas use ONNX Runtime's CUDA provider")
        core = openvino.Core()
        model = core.read_model(model_path)
        # fp32 precision: without the hint OpenVINO may run bf16 on CPUs that have it,
        # which moves embeddings; LATENCY: one stream, the replica's threads on one call.
        self._compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": max(1, placement.threads),
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
            },
        )
        self._inputs = [_info(p) for p in self._compiled.inputs]
        self._outputs = [_info(p) for p in self._compiled.outputs]
        self._output_index = {o.name: i for i, o in enumerate(self._outputs)}
        # One infer request reused (its buffers stay allocated); a lock because a replica
        # may run two batches on two threads.
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def set_providers(self, providers) -> None:  # insightface's prepare(ctx_id=-1): already CPU
        pass

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            results = self._request.infer({name: np.ascontiguousarray(x) for name, x in feeds.items()})
            values = [np.array(results[port]) for port in self._compiled.outputs]  # copies: the buffers are reused
        if output_names is None:
            return values
        return [values[self._output_index[name]] for name in output_names]


# ---- torch ---------------------------------------------------------------------------


def torch_device(placement: Placement):
    """The torch device for a placement; sets the process's intra-op threads on CPU
    (one replica = its share of cores: no oversubscription of the node)."""
    import torch

    if placement.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("this replica was placed on a GPU but torch sees no CUDA device")
        # Ray's CUDA_VISIBLE_DEVICES shows this replica only its own GPU(s): index 0.
        return torch.device("cuda", 0)
    torch.set_num_threads(max(1, placement.threads))
    return torch.device("cpu")


def prepare(module, device):
    """A module ready to serve: on its device, in eval mode, no gradients kept."""
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def inference():
    """The context every forward pass runs in."""
    import torch

    return torch.inference_mode()


def to_device(value: Any, device) -> Any:
    """numpy arrays -> tensors on `device` (also inside tuples, lists and dicts); tensors
    moved there; anything else as it is."""
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value)).to(device)
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def to_host(value: Any) -> Any:
    """Tensors -> numpy arrays on the CPU (also inside tuples, lists and dicts); anything
    else as it is."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.cpu().numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value)
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    return value
