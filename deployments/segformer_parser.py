"""SegFormerParser: the face parser (19 CelebAMask-HQ labels) from a local checkpoint
folder, in one of two formats, told apart by what the folder holds:

- config.json (+ preprocessor_config.json, weights): a transformers SegFormer, the
  production model (jonathandinu/face-parsing) or the random test / bench ones;
- model_best.pth: the small trained UNet (deployments/unet_parser.py), the local
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

A SegFormer runs with its decode head folded (deployments/segformer_head.py): the same
logits, B5 at 512x512 about 20 % faster on torch and the ONNX export smaller and faster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from deployments import parser_onnx, unet_parser
from deployments.segformer_head import FoldedSegformer
from deployments.torch_runtime import inference, prepare, torch_device
from deployments.types import ParseRequest, Placement

CELEBAMASK_LABELS = (
    "background",
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)


@dataclass(frozen=True, kw_only=True)
class SegFormerParserConfig:
    checkpoint_dir: str
    # torch | onnx | onnx-int8 | auto (deployments/parser_onnx.py): the same network on
    # ONNX Runtime, fp32 or with int8 MatMuls (the fast CPU path), exported once and
    # cached; auto = onnx-int8 on a CPU replica, torch on a GPU one.
    runtime: str = "torch"
    onnx_cache_dir: str | None = None  # where exports are kept (default: parser_onnx.cache_dir)
    max_forward_batch: int = 16  # ROIs per forward pass: bounds memory when many faces come at once


@dataclass(frozen=True)
class ParserInput:
    """A checkpoint's preprocessing, read from its small files only: resize to input_hw
    (None: keep the ROI size), then x * mul + add per channel."""

    input_hw: tuple[int, int] | None
    mul: np.ndarray
    add: np.ndarray
    num_labels: int
    kind: str  # "segformer" | "unet"


@dataclass(frozen=True)
class ParserNet:
    """A loaded checkpoint: pixels [N,3,H,W] float -> logits [N,labels,h,w] (channel = CelebAMask-HQ id),
    and its preprocessing (ParserInput's fields)."""

    module: torch.nn.Module
    input_hw: tuple[int, int] | None
    mul: np.ndarray
    add: np.ndarray
    num_labels: int
    kind: str  # "segformer" | "unet"


class SegFormerParser:
    def __init__(self, cfg: SegFormerParserConfig, placement: Placement = Placement()):
        self.cfg = cfg
        runtime = parser_onnx.placed_runtime(cfg.runtime, placement)
        ckpt = Path(cfg.checkpoint_dir)
        spec = parser_input(ckpt)
        self.kind, self.input_hw, self.num_labels = spec.kind, spec.input_hw, spec.num_labels
        self._mul, self._add = spec.mul, spec.add
        if runtime == "torch":
            self.device = torch_device(placement)
            self.model = prepare(load_parser_net(ckpt).module, self.device)
            self._onnx = None
        else:
            # The torch weights are loaded only to export, once; a cached export is
            # just opened (the cold start of an ONNX replica is the session's load).
            self._onnx = parser_onnx.OnnxParserNet(
                parser_onnx.ensure_export(ckpt, runtime, cfg.onnx_cache_dir), placement
            )
            self.runtime = f"{runtime} ({self._onnx.provider})"  # health: what really runs

    @staticmethod
    def item_size(item: ParseRequest | list[ParseRequest]) -> int:
        """ROIs in an item: a batch is counted in faces, not in calls."""
        return len(item) if isinstance(item, list) else 1

    def predict(self, items: list[ParseRequest | list[ParseRequest]]) -> list:
        if not items:
            return []
        requests = [r for item in items for r in (item if isinstance(item, list) else [item])]
        step = max(1, self.cfg.max_forward_batch)
        maps = [m for i in range(0, len(requests), step) for m in self._parse(requests[i : i + step])]
        out, at = [], 0
        for item in items:
            n = self.item_size(item)
            out.append(maps[at : at + n] if isinstance(item, list) else maps[at])
            at += n
        return out

    def _parse(self, requests: list[ParseRequest]) -> list[np.ndarray]:
        """One forward pass; each face map back at its ROI's size."""
        faces = self._face_probabilities(self._preprocess([r.roi for r in requests]), requests)
        return [
            cv2.resize(face, (r.roi.shape[1], r.roi.shape[0]), interpolation=cv2.INTER_LINEAR).clip(0, 1)
            for face, r in zip(faces, requests)
        ]

    def _preprocess(self, rois: list[np.ndarray]) -> np.ndarray:
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

    def _face_probabilities(self, pixels: np.ndarray, items: list[ParseRequest]) -> np.ndarray:
        """-> [N, h, w]: per item, the softmax probabilities of its labels, summed. On torch
        the sum happens on the model's device, so a GPU replica copies one map per face
        back, not one per label (19x fewer bytes)."""
        select = np.zeros((len(items), self.num_labels), np.float32)
        for i, item in enumerate(items):
            select[i, [label for label in item.labels if 0 <= label < self.num_labels]] = 1.0
        if self._onnx is not None:
            return np.einsum("nl,nlhw->nhw", select, self._forward(pixels))
        with inference():
            probs = self._torch_probabilities(pixels)
            return torch.einsum("nl,nlhw->nhw", torch.from_numpy(select).to(self.device), probs).cpu().numpy()

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        """-> probabilities [N, labels, h, w] (softmax over the labels), on the CPU (every
        label's map: the tests read them; predict sums on the device instead)."""
        if self._onnx is not None:
            return self._onnx(pixels)
        with inference():
            return self._torch_probabilities(pixels).cpu().numpy()

    def _torch_probabilities(self, pixels: np.ndarray) -> torch.Tensor:
        return self.model(torch.from_numpy(pixels).to(self.device)).float().softmax(dim=1)


def parser_input(ckpt: Path) -> ParserInput:
    """The checkpoint folder's preprocessing, by its format (see the module docstring),
    without loading its weights."""
    ckpt = Path(ckpt)
    if (ckpt / "config.json").is_file():
        return _segformer_input(ckpt)
    if unet_parser.is_checkpoint(ckpt):
        side = unet_parser.INPUT_SIDE
        return ParserInput(
            (side, side),
            np.full(3, unet_parser.PIXEL_SCALE, np.float32),
            np.full(3, unet_parser.PIXEL_OFFSET, np.float32),
            len(unet_parser.CHANNEL_TO_CELEBAMASK),
            "unet",
        )
    raise FileNotFoundError(
        f"{ckpt} is not a face-parser checkpoint: it holds neither config.json (SegFormer) "
        f"nor {unet_parser.CHECKPOINT_FILE} (small UNet)"
    )


def load_parser_net(ckpt: Path) -> ParserNet:
    """The checkpoint folder's network and its preprocessing."""
    spec = parser_input(ckpt)
    if spec.kind == "unet":
        module = unet_parser.load(ckpt)
    else:
        from transformers import SegformerForSemanticSegmentation

        # pixels -> logits (the UNet's call shape), the decode head folded: the same
        # logits for less work (deployments/segformer_head.py).
        module = FoldedSegformer(SegformerForSemanticSegmentation.from_pretrained(str(ckpt)).eval())
    return ParserNet(module, spec.input_hw, spec.mul, spec.add, spec.num_labels, spec.kind)


def _segformer_input(ckpt: Path) -> ParserInput:
    prep = json.loads((ckpt / "preprocessor_config.json").read_text())
    config = json.loads((ckpt / "config.json").read_text())
    size = prep.get("size", {"height": 512, "width": 512})
    input_hw = (int(size["height"]), int(size["width"])) if prep.get("do_resize", True) else None
    scale = float(prep.get("rescale_factor", 1 / 255)) if prep.get("do_rescale", True) else 1.0
    mean = np.asarray(prep.get("image_mean", [0.485, 0.456, 0.406]), np.float32)
    std = np.asarray(prep.get("image_std", [0.229, 0.224, 0.225]), np.float32)
    if not prep.get("do_normalize", True):
        mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
    num_labels = len(config["id2label"]) if config.get("id2label") else int(config.get("num_labels", 2))
    # (x * scale - mean) / std folded into one multiply-add per pixel.
    return ParserInput(
        input_hw, (scale / std).astype(np.float32), (-mean / std).astype(np.float32), num_labels, "segformer"
    )


# write_random_checkpoint's variants: (depths, hidden sizes, attention heads, decoder
# width, input side).
RANDOM_VARIANTS = {
    "tiny": ([1, 1, 1, 1], [8, 16, 32, 64], [1, 1, 2, 4], 32, 128),
    "b5": ([3, 6, 40, 3], [64, 128, 320, 512], [1, 2, 5, 8], 768, 512),
}


def write_random_checkpoint(out_dir: Path, variant: str) -> None:
    """A SegFormer with random weights in the real checkpoint's format
    (save_pretrained + preprocessor_config.json), for where no real weights exist.

    tiny: a few thousand parameters, 128x128 input (tests).
    b5:   the architecture of jonathandinu/face-parsing (MiT-B5, 19 labels, 512x512),
          so benchmarks pay realistic compute.
    """
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    labels = {i: n for i, n in enumerate(CELEBAMASK_LABELS)}
    common = dict(num_labels=len(labels), id2label=labels, label2id={n: i for i, n in labels.items()})
    if variant not in RANDOM_VARIANTS:
        raise ValueError(f"unknown SegFormer variant {variant!r}")
    depths, hidden_sizes, heads, decoder_hidden_size, side = RANDOM_VARIANTS[variant]
    config = SegformerConfig(
        depths=depths,
        hidden_sizes=hidden_sizes,
        num_attention_heads=heads,
        decoder_hidden_size=decoder_hidden_size,
        **common,
    )
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(config).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    SegformerImageProcessor(size={"height": side, "width": side}, do_reduce_labels=False).save_pretrained(str(out_dir))
