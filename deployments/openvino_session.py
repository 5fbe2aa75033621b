"""An ONNX model compiled by OpenVINO for the CPU, behind the part of ONNX Runtime's
InferenceSession interface that insightface's runners call (get_inputs, get_outputs,
run, get_providers). So a recogniser built by insightface runs on either runtime with
the same pre- and post-processing.

Why: on the CPUs here OpenVINO runs the 128-d MobileFaceNet recogniser about 3x faster
than ONNX Runtime at one thread on real-range (0-255) crops, 4.0 vs 13 ms per face, with
the same fp32 results (cosine 1.0). The detectors gain nothing (det_500m 17.6 vs 15.7
ms), so only ArcFace offers it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from deployments.types import Placement

PROVIDER = "OpenVINO CPU"  # what the health route reports, as ONNX Runtime's provider names


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


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
