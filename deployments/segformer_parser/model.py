"""SegFormerParser: the face parser (19 CelebAMask-HQ labels) from a local checkpoint
folder, in one of two formats, told apart by what the folder holds:

- config.json (+ preprocessor_config.json, weights): a transformers SegFormer, the
  production model (jonathandinu/face-parsing) or the random test / bench ones;
- model_best.pth: the small trained UNet (deployments/segformer_parser/unet.py), the local
  stand-in when the SegFormer weights are absent.

Either way the network's output channel c is CelebAMask-HQ id c, so the pipelines and
the apps do not know which one serves. The class keeps its name: it is the deployment
name in serve_config.yaml, the metrics and the model tier.

Item: ParseRequest(roi uint8 RGB HxWx3, labels), or a list of them (several faces of one
image: one call instead of one per face). Result: float32 HxW, the probability that each
ROI pixel belongs to any of the requested labels (not 19 maps: only what the pipeline
needs travels back), or a list of those for a list. ROIs of any sizes from any requests
share forward passes of at most `max_forward_batch` ROIs: each is resized to the
checkpoint's input size.

A SegFormer runs with its decode head folded (deployments/segformer_parser/head.py): the same
logits, B5 at 512x512 about 20 % faster on torch and the ONNX export smaller and faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from deployments.base import TorchModel
from deployments.runtime import Runtimes, resolve_runtime
from deployments.segformer_parser import onnx as parser_onnx
from deployments.segformer_parser.checkpoint import load_parser_net, parser_input
from deployments.types import ParseRequest, Placement

RUNTIMES = Runtimes(
    model="SegFormerParser",
    key="runtime",
    offered=("torch", "onnx", "onnx-int8"),
    auto_cpu=("onnx-int8",),
    auto_cuda=("torch",),
)


@dataclass(frozen=True, kw_only=True)
class SegFormerParserConfig:
    checkpoint_dir: str
    # torch | onnx | onnx-int8 | auto (deployments/segformer_parser/onnx.py): the same network on
    # ONNX Runtime, fp32 or with int8 MatMuls (the fast CPU path), exported once and
    # cached; auto = onnx-int8 on a CPU replica, torch on a GPU one.
    runtime: str = "torch"
    onnx_cache_dir: str | None = None  # where exports are kept (default: parser_onnx.cache_dir)
    max_forward_batch: int = 16  # ROIs per forward pass: bounds memory when many faces come at once


class SegFormerParser(TorchModel):
    def __init__(self, cfg: SegFormerParserConfig, placement: Placement = Placement()):
        self._runtime = resolve_runtime(cfg.runtime, placement, RUNTIMES)
        # On an ONNX runtime no torch network serves: no torch device is placed.
        super().__init__(cfg, placement, on_torch=self._runtime == "torch")
        ckpt = Path(cfg.checkpoint_dir)
        spec = parser_input(ckpt)
        self.kind, self.input_hw, self.num_labels = spec.kind, spec.input_hw, spec.num_labels
        self._mul, self._add = spec.mul, spec.add
        if self._runtime == "torch":
            self.model = self.place(load_parser_net(ckpt).module)
            self._onnx = None
        else:
            # The torch weights are loaded only to export, once; a cached export is
            # just opened (the cold start of an ONNX replica is the session's load).
            self._onnx = parser_onnx.OnnxParserNet(
                parser_onnx.ensure_export(ckpt, self._runtime, cfg.onnx_cache_dir), placement
            )

    def describe(self) -> dict[str, str | None]:
        if self._onnx is None:
            return super().describe()  # the torch device
        return {"runtime": f"{self._runtime} ({self._onnx.provider})"}  # and the provider ONNX Runtime kept

    @staticmethod
    def item_size(item: ParseRequest | list[ParseRequest]) -> int:
        """ROIs in an item: a batch is counted in faces, not in calls."""
        return len(item) if isinstance(item, list) else 1

    def predict(self, items: list[ParseRequest | list[ParseRequest]]) -> list:
        if not items:
            return []
        requests = [r for item in items for r in (item if isinstance(item, list) else [item])]
        step = max(1, self.cfg.max_forward_batch)
        maps = [
            m
            for i in range(0, len(requests), step)
            for m in self.postprocess(self.forward(self.preprocess(requests[i : i + step])), requests[i : i + step])
        ]
        out, at = [], 0
        for item in items:
            n = self.item_size(item)
            out.append(maps[at : at + n] if isinstance(item, list) else maps[at])
            at += n
        return out

    def preprocess(self, requests: list[ParseRequest]) -> tuple[np.ndarray, np.ndarray]:
        """-> (pixels [N,3,H,W], which labels each face sums [N, labels])."""
        select = np.zeros((len(requests), self.num_labels), np.float32)
        for i, request in enumerate(requests):
            select[i, [label for label in request.labels if 0 <= label < self.num_labels]] = 1.0
        return self._pixels([r.roi for r in requests]), select

    def _pixels(self, rois: list[np.ndarray]) -> np.ndarray:
        batch = []
        for roi in rois:
            if self.input_hw is not None:
                h, w = self.input_hw
                shrink = roi.shape[0] > h or roi.shape[1] > w
                roi = cv2.resize(roi, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            batch.append(roi.astype(np.float32) * self._mul + self._add)
        if len({b.shape for b in batch}) > 1:
            raise ValueError("ROIs of different sizes need a checkpoint that resizes (do_resize)")
        return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2))

    def forward(self, inputs: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
        """(pixels, select) -> [N, h, w]: per face, the softmax probabilities of its labels,
        summed; select None -> every label's map [N, labels, h, w]."""
        if self._onnx is None:
            return super().forward(inputs)  # torch: on the device, under inference mode
        pixels, select = inputs
        probs = self._onnx(pixels)
        return probs if select is None else np.einsum("nl,nlhw->nhw", select, probs)

    def _forward(self, inputs: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        # The sum happens on the model's device, so a GPU replica copies one map per face
        # back, not one per label (19x fewer bytes).
        pixels, select = inputs
        probs = self.model(pixels).float().softmax(dim=1)
        return probs if select is None else torch.einsum("nl,nlhw->nhw", select, probs)

    def postprocess(self, faces: np.ndarray, requests: list[ParseRequest]) -> list[np.ndarray]:
        """Each face map back at its ROI's size."""
        return [
            cv2.resize(face, (r.roi.shape[1], r.roi.shape[0]), interpolation=cv2.INTER_LINEAR).clip(0, 1)
            for face, r in zip(faces, requests)
        ]

    def label_probabilities(self, rois: list[np.ndarray]) -> np.ndarray:
        """Every label's probability map, [N, labels, h, w] at the network's output size
        (softmax over the labels; channel c is CelebAMask-HQ id c), on the CPU."""
        return self.forward((self._pixels(rois), None))
