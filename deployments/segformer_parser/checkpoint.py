"""The face parser's checkpoint folders: which format a folder holds (a transformers
SegFormer, or the small UNet stand-in), its preprocessing read from its small files, its
network loaded, and random SegFormer checkpoints in the real format for where no real
weights exist. SegFormerParser (model.py) and its ONNX export (onnx.py) both load through
here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deployments.segformer_parser import unet
from deployments.segformer_parser.head import FoldedSegformer

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


def parser_input(ckpt: Path) -> ParserInput:
    """The checkpoint folder's preprocessing, by its format (see the module docstring),
    without loading its weights."""
    ckpt = Path(ckpt)
    if (ckpt / "config.json").is_file():
        return _segformer_input(ckpt)
    if unet.is_checkpoint(ckpt):
        side = unet.INPUT_SIDE
        return ParserInput(
            (side, side),
            np.full(3, unet.PIXEL_SCALE, np.float32),
            np.full(3, unet.PIXEL_OFFSET, np.float32),
            len(unet.CHANNEL_TO_CELEBAMASK),
            "unet",
        )
    raise FileNotFoundError(
        f"{ckpt} is not a face-parser checkpoint: it holds neither config.json (SegFormer) "
        f"nor {unet.CHECKPOINT_FILE} (small UNet)"
    )


def load_parser_net(ckpt: Path) -> ParserNet:
    """The checkpoint folder's network and its preprocessing."""
    spec = parser_input(ckpt)
    if spec.kind == "unet":
        module = unet.load(ckpt)
    else:
        from transformers import SegformerForSemanticSegmentation

        # pixels -> logits (the UNet's call shape), the decode head folded: the same
        # logits for less work (deployments/segformer_parser/head.py).
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
