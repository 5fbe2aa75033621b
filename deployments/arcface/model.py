"""ArcFace: insightface's ArcFace recogniser runner over a local ONNX file.

Item: a face aligned with the standard 5-point ArcFace template, uint8 RGB HxWx3 at
the model's input size (112x112 for every ArcFace export we use), or a stack of them
[K,H,W,3] (all the faces of one image: one call instead of K). Result: the embedding,
float32 [D], or [K,D] for a stack, L2-normalised; D comes from the model (128 for the
MobileFaceNet used in tests, 512 for buffalo_l's w600k_r50). The crops of every item of
a batch go through true batched forward passes of at most `max_forward_batch` crops.

Runtime (`runtime`): ONNX Runtime, or OpenVINO on a CPU replica (deployments/runtime.py's
OpenVINOSession: the same fp32 network about 3x faster per face there); `auto` is
OpenVINO on a CPU replica when it is installed, ONNX Runtime otherwise (its CUDA
provider on a GPU replica).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deployments.base import Model
from deployments.runtime import OpenVINOSession, Runtimes, active_provider, providers, resolve_runtime, session_options
from deployments.types import Placement


@dataclass(frozen=True, kw_only=True)
class ArcFaceConfig:
    model_path: str
    max_forward_batch: int = 32  # crops per forward pass: bounds memory when stacks are large
    runtime: str = "auto"  # onnxruntime | openvino | auto (see the module's docstring)


RUNTIMES = Runtimes(
    model="ArcFace",
    key="runtime",
    offered=("onnxruntime", "openvino"),
    auto_cpu=("openvino", "onnxruntime"),
    auto_cuda=("onnxruntime",),  # OpenVINOSession runs on the CPU only
)


def _is_recogniser(session) -> bool:
    """insightface's routing rule for a recogniser (model_zoo.get_model): one output and
    a square input of at least 112 pixels, a multiple of 16."""
    shape = session.get_inputs()[0].shape
    side = shape[2] if len(shape) == 4 and shape[2] == shape[3] else None
    return len(session.get_outputs()) == 1 and isinstance(side, int) and side >= 112 and side % 16 == 0


class ArcFace(Model):
    def __init__(self, cfg: ArcFaceConfig, placement: Placement = Placement()):
        from insightface.model_zoo import get_model
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        super().__init__(cfg, placement)
        if resolve_runtime(cfg.runtime, placement, RUNTIMES) == "openvino":
            # insightface's own runner (its input normalisation) over an OpenVINO session.
            session = OpenVINOSession(cfg.model_path, placement)
            self.runner = ArcFaceONNX(cfg.model_path, session=session) if _is_recogniser(session) else None
        else:
            self.runner = get_model(
                cfg.model_path, providers=providers(placement), sess_options=session_options(placement)
            )
        if self.runner is None or getattr(self.runner, "taskname", "") != "recognition":
            raise ValueError(f"{cfg.model_path} is not an ArcFace recogniser export")
        width, height = self.runner.input_size
        self.input_size = int(width)
        if width != height:
            raise ValueError(f"{cfg.model_path}: expected a square input, got {width}x{height}")
        dim = self.runner.output_shape[-1]
        # A symbolic output width: ask the model once rather than assume a constant.
        self.embedding_size = (
            int(dim)
            if isinstance(dim, int)
            else int(self._forward(np.zeros((1, self.input_size, self.input_size, 3), np.float32)).shape[-1])
        )

    @staticmethod
    def item_size(item: np.ndarray) -> int:
        """Faces in an item: a batch is counted in faces, not in calls."""
        return 1 if item.ndim == 3 else len(item)

    def describe(self) -> dict[str, str | None]:
        # What really runs: "OpenVINO CPU", or the provider ONNX Runtime kept (the CPU one
        # when the CUDA one could not load).
        return {"runtime": active_provider(self.runner.session)}

    def predict(self, items: list[np.ndarray]) -> list[np.ndarray]:
        if not items:
            return []
        batch, counts = self._preprocess(items)
        step = max(1, self.cfg.max_forward_batch)
        features = [self._forward(batch[i : i + step]) for i in range(0, len(batch), step)]
        unit = self._postprocess(features)
        out, at = [], 0
        for item, n in zip(items, counts):
            out.append(unit[at] if item.ndim == 3 else unit[at : at + n])
            at += n
        return out

    def _preprocess(self, items: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """Every crop of every item in one float32 NHWC batch, and crops per item."""
        crops = [crop for item in items for crop in (item[None] if item.ndim == 3 else item)]
        side = self.input_size
        batch = np.empty((len(crops), side, side, 3), np.float32)
        for i, crop in enumerate(crops):
            if crop.shape[:2] != (side, side):  # a caller that aligned to another size
                crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)
            batch[i] = crop
        return batch, [1 if item.ndim == 3 else len(item) for item in items]

    def _forward(self, batch_nhwc: np.ndarray) -> np.ndarray:
        # The runner's forward applies the model's own (input_mean, input_std): zero/one
        # for exports that normalise inside the graph, 127.5/127.5 for the others. The
        # crops are RGB already, the channel order the runner's BGR->RGB swap produces.
        return self.runner.forward(np.ascontiguousarray(batch_nhwc.transpose(0, 3, 1, 2)))

    def _postprocess(self, parts: list[np.ndarray]) -> np.ndarray:
        """Forward-pass outputs -> one [N,D] array of unit vectors."""
        if not parts:
            return np.zeros((0, self.embedding_size), np.float32)
        features = np.concatenate(parts).astype(np.float32).reshape(-1, self.embedding_size)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return features / np.maximum(norms, 1e-12)
