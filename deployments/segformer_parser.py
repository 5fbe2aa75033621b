"""SegFormerParser: SegFormer face parsing (19 CelebAMask-HQ labels) from a local
checkpoint directory (config.json, preprocessor_config.json, weights).

Item: ParseRequest(roi uint8 RGB HxWx3, labels). Result: float32 HxW, the probability
that each ROI pixel belongs to any of the requested labels (not 19 maps: only what the
pipeline needs travels back). ROIs of any sizes from any requests share one forward
pass: each is resized to the checkpoint's input size, as its preprocessor config says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from deployments.torch_runtime import inference, prepare, torch_device
from deployments.types import ParseRequest, Placement

CELEBAMASK_LABELS = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
    "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)


@dataclass(frozen=True, kw_only=True)
class SegFormerParserConfig:
    checkpoint_dir: str


class SegFormerParser:
    def __init__(self, cfg: SegFormerParserConfig, placement: Placement = Placement()):
        from transformers import SegformerForSemanticSegmentation

        self.device = torch_device(placement)
        ckpt = Path(cfg.checkpoint_dir)
        prep = json.loads((ckpt / "preprocessor_config.json").read_text())
        size = prep.get("size", {"height": 512, "width": 512})
        self.input_hw = (int(size["height"]), int(size["width"])) if prep.get("do_resize", True) else None
        scale = float(prep.get("rescale_factor", 1 / 255)) if prep.get("do_rescale", True) else 1.0
        mean = np.asarray(prep.get("image_mean", [0.485, 0.456, 0.406]), np.float32)
        std = np.asarray(prep.get("image_std", [0.229, 0.224, 0.225]), np.float32)
        if not prep.get("do_normalize", True):
            mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
        # (x * scale - mean) / std folded into one multiply-add per pixel.
        self._mul = (scale / std).astype(np.float32)
        self._add = (-mean / std).astype(np.float32)
        self.model = prepare(SegformerForSemanticSegmentation.from_pretrained(str(ckpt)), self.device)
        self.num_labels = int(self.model.config.num_labels)

    def predict(self, items: list[ParseRequest]) -> list[np.ndarray]:
        if not items:
            return []
        pixels = self._preprocess([it.roi for it in items])
        logits = self._forward(pixels)
        return self._postprocess(logits, items)

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

    def _forward(self, pixels: np.ndarray) -> torch.Tensor:
        with inference():
            out = self.model(pixel_values=torch.from_numpy(pixels).to(self.device))
            return out.logits.float().softmax(dim=1).cpu()

    def _postprocess(self, probs: torch.Tensor, items: list[ParseRequest]) -> list[np.ndarray]:
        results = []
        for p, item in zip(probs.numpy(), items):
            labels = [label for label in item.labels if 0 <= label < self.num_labels]
            face = p[labels].sum(axis=0) if labels else np.zeros(p.shape[1:], np.float32)
            h, w = item.roi.shape[:2]
            results.append(cv2.resize(face, (w, h), interpolation=cv2.INTER_LINEAR).clip(0, 1))
        return results


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
    if variant == "tiny":
        config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 2, 4],
                                 decoder_hidden_size=32, **common)
        side = 128
    elif variant == "b5":
        config = SegformerConfig(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512],
                                 num_attention_heads=[1, 2, 5, 8], decoder_hidden_size=768, **common)
        side = 512
    else:
        raise ValueError(f"unknown SegFormer variant {variant!r}")
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(config).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    SegformerImageProcessor(size={"height": side, "width": side}, do_reduce_labels=False).save_pretrained(str(out_dir))
