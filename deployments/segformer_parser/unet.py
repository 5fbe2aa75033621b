"""The small trained UNet face parser (SimonEnkel/lightweight-unet-face-parsing,
model_best.pth): 19 CelebAMask-HQ labels, 467k parameters, trained from scratch on
1000 CelebAMask-HQ images. Weak next to SegFormer, but real: the local stand-in that
SegFormerParser serves when the SegFormer checkpoint is absent.

Facts from the checkpoint's state dict and the repo's notebook: two encoder stages and
a bottleneck of two Conv3x3+ReLU each (no batch norm), 2x max-pooling between them,
2x2 stride-2 transposed convolutions going up, each concatenated as [upsampled, skip]
before its decoder stage, a 1x1 head. Input RGB 256x256, ToTensor + Normalize(0.5, 0.5)
= x / 127.5 - 1. Output logits [N, 19, 256, 256] in the student's own class order,
which `load` turns into CelebAMask-HQ id order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CHECKPOINT_FILE = "model_best.pth"
INPUT_SIDE = 256
PIXEL_SCALE = 1 / 127.5  # uint8 RGB * PIXEL_SCALE + PIXEL_OFFSET = Normalize(0.5, 0.5) of ToTensor
PIXEL_OFFSET = -1.0
# Output channel k of the checkpoint is CelebAMask-HQ id CHANNEL_TO_CELEBAMASK[k] (the
# student's COLOR_TO_ID order; see ../shared/assets/SOURCES.md).
CHANNEL_TO_CELEBAMASK = (0, 11, 6, 1, 9, 5, 2, 16, 8, 3, 12, 7, 14, 13, 10, 17, 18, 4, 15)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU()
    )


class UNetSmall(nn.Module):
    """The checkpoint's network; attribute names match its state dict keys."""

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.enc1 = _stage(3, 32)
        self.enc2 = _stage(32, 64)
        self.bottleneck = _stage(64, 128)
        self.up1 = nn.ConvTranspose2d(128, 64, 2, stride=2)
        self.dec1 = _stage(128, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = _stage(64, 32)
        self.out = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        b = self.bottleneck(nn.functional.max_pool2d(e2, 2))
        d1 = self.dec1(torch.cat([self.up1(b), e2], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d1), e1], dim=1))
        return self.out(d2)


class CelebAMaskOrder(nn.Module):
    """Wraps a network so its output channel c is CelebAMask-HQ id c: the rest of the
    code (the pipelines' label ids) never sees the checkpoint's own order."""

    def __init__(self, net: nn.Module, channel_to_id: tuple[int, ...]):
        super().__init__()
        self.net = net
        order = [channel_to_id.index(i) for i in range(len(channel_to_id))]  # id -> channel
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).index_select(1, self.order)


def is_checkpoint(path: Path) -> bool:
    """A folder holding this model's weights file."""
    return (Path(path) / CHECKPOINT_FILE).is_file()


def load(path: Path) -> nn.Module:
    """The network from a checkpoint folder, on CPU, outputs in CelebAMask-HQ id order."""
    net = UNetSmall(num_classes=len(CHANNEL_TO_CELEBAMASK))
    # weights_only: a plain state dict, no pickled code is run.
    state = torch.load(Path(path) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return CelebAMaskOrder(net, CHANNEL_TO_CELEBAMASK)
