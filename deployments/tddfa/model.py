"""TDDFA: 3DDFA_V2's MobileNetV1 regressor of the 62 morphable-model parameters
(12 pose, 40 shape, 10 expression) from a 120x120 face crop.

Item: uint8 RGB crops of one image's faces, [K,120,120,3] (or one crop [120,120,3]).
Result: float32 [K,62] de-normalised parameters (network output * std + mean), one row
per crop; K = 0 gives [0,62]. Crops of every item share one forward pass, so a batch
is sized in faces (`item_size`). Turning parameters into points is deployments.tddfa.bfm's.

The pure helpers `roi_box_from_bbox` and `crop_120` are 3DDFA_V2's crop rule, for the
pipeline to cut the crops from a detector box.

The weights were trained on OpenCV (BGR) crops normalised as (x - 127.5) / 128; we
take RGB like every other model here and swap the channels in `preprocess` (checked:
over 17 near-frontal faces the landmarks miss RetinaFace's 5 points by 4.57 % of the
inter-ocular distance this way, 4.80 % with the channels the other way round).

Leave `arch` unset in serving configs: the width is then read from the weights, so the
production mb1 and its mb05 stand-in load through the same config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from deployments.base import TorchModel
from deployments.tddfa.bfm import NUM_PARAMS
from deployments.tddfa.crops import INPUT_SIZE
from deployments.types import Placement

ARCHS = {"mb1": 1.0, "mb05": 0.5}  # 3DDFA_V2's configs/mb1_120x120.yml, mb05_120x120.yml

# MobileNetV1 after the stem: (name, output channels at width 1, stride) per
# depthwise-separable block, with 3DDFA_V2's attribute names (its checkpoint keys).
_BLOCKS = tuple(
    zip(
        "dw2_1 dw2_2 dw3_1 dw3_2 dw4_1 dw4_2 dw5_1 dw5_2 dw5_3 dw5_4 dw5_5 dw5_6 dw6".split(),
        (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024),
        (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1),
        strict=True,
    )
)


@dataclass(frozen=True, kw_only=True)
class TDDFAConfig:
    weights_path: str  # 3DDFA_V2 checkpoint ({'state_dict': ...}, keys prefixed 'module.')
    param_stats_path: str  # param_mean_std_62d_120x120.pkl
    arch: str | float | None = None  # "mb1" | "mb05" | a width multiplier; None: read it from the weights


class _DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.relu(self.bn_dw(self.conv_dw(x)))
        return torch.relu(self.bn_sep(self.conv_sep(x)))


class MobileNetV1(nn.Module):
    """3DDFA_V2's MobileNetV1: 3x3/2 stem, 13 depthwise-separable blocks, global
    average pool, one linear head (`fc_param`, 62 outputs). The checkpoint's second head
    (`fc_lm`, 2D landmarks) is unused at inference and not built."""

    def __init__(self, width: float, num_outputs: int = NUM_PARAMS):
        super().__init__()
        stem = int(32 * width)
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = stem
        for name, cout, stride in _BLOCKS:
            setattr(self, name, _DepthwiseSeparable(cin, int(cout * width), stride))
            cin = int(cout * width)
        self.fc_param = nn.Linear(cin, num_outputs)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        for name, _, _ in _BLOCKS:
            x = getattr(self, name)(x)
        return self.fc_param(x.mean(dim=(2, 3)))

    def fuse_batchnorm(self) -> MobileNetV1:
        """Fold every eval-mode BatchNorm into the convolution before it (same outputs
        to float rounding; measured ~25 % less CPU time per face)."""
        self.conv1, self.bn1 = fuse_conv_bn_eval(self.conv1, self.bn1), nn.Identity()
        for name, _, _ in _BLOCKS:
            block = getattr(self, name)
            block.conv_dw, block.bn_dw = fuse_conv_bn_eval(block.conv_dw, block.bn_dw), nn.Identity()
            block.conv_sep, block.bn_sep = fuse_conv_bn_eval(block.conv_sep, block.bn_sep), nn.Identity()
        return self


def _width(arch, state: dict) -> float:
    """The width multiplier: from the config when given, checked against the weights."""
    from_weights = state["conv1.weight"].shape[0] / 32
    if arch is None:
        return from_weights
    if isinstance(arch, str) and arch not in ARCHS:
        raise ValueError(f"unknown TDDFA arch {arch!r}; known: {', '.join(ARCHS)} or a width multiplier")
    width = ARCHS[arch] if isinstance(arch, str) else float(arch)
    if abs(width - from_weights) > 1e-6:
        raise ValueError(f"TDDFA arch {arch!r} (width {width}) does not match the weights (width {from_weights})")
    return width


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """3DDFA_V2 checkpoint -> our module's state dict (prefix 'module.' dropped, the
    unused landmark head left out)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith("fc_lm.")}


class TDDFA(TorchModel):
    def __init__(self, cfg: TDDFAConfig, placement: Placement = Placement()):
        from deployments.tddfa.bfm import load_numpy_pickle

        super().__init__(cfg, placement)
        state = load_state_dict(cfg.weights_path)
        self.width = _width(cfg.arch, state)
        net = MobileNetV1(self.width)
        net.load_state_dict(state, strict=True)
        # channels_last: the depthwise convolutions run faster in it on CPU (measured).
        self.net = self.place(net.eval().fuse_batchnorm()).to(memory_format=torch.channels_last)
        stats = load_numpy_pickle(cfg.param_stats_path)
        self.param_mean = np.asarray(stats["mean"], np.float32).reshape(NUM_PARAMS)
        self.param_std = np.asarray(stats["std"], np.float32).reshape(NUM_PARAMS)

    @staticmethod
    def item_size(item: np.ndarray) -> int:
        return 1 if np.ndim(item) == 3 else int(len(item))

    def preprocess(self, items: list[np.ndarray]) -> np.ndarray:
        """All crops of all items -> float32 [B,120,120,3], BGR, (x - 127.5) / 128. Kept
        channels-last: that is the layout the network runs in, so no transpose copy."""
        stacks = []
        for item in items:
            crops = np.asarray(item)
            crops = crops[None] if crops.ndim == 3 else crops
            if crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3) or crops.dtype != np.uint8:
                raise ValueError(
                    f"TDDFA takes uint8 [K,{INPUT_SIZE},{INPUT_SIZE},3] crops, got {crops.dtype} {crops.shape}"
                )
            stacks.append(crops)
        crops = np.concatenate(stacks) if stacks else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        bgr = crops[..., ::-1].astype(np.float32)
        bgr -= 127.5
        bgr /= 128.0
        return bgr

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if not len(batch):  # every item an empty stack: no forward pass
            return batch.new_zeros((0, NUM_PARAMS))
        # NHWC memory viewed as NCHW: exactly torch's channels_last layout.
        return self.net(batch.permute(0, 3, 1, 2)).float()

    def postprocess(self, out: np.ndarray, items: list[np.ndarray]) -> list[np.ndarray]:
        params = (out * self.param_std + self.param_mean).astype(np.float32)
        bounds = np.cumsum([0, *(self.item_size(it) for it in items)])
        return [params[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
