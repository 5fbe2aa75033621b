"""What MeshRenderer draws: a render request (mesh, texture, camera), the scene both
backends rasterise (vertices in the canvas's pixels), and the compositing of coverage
into RGBA. numpy only: the pipelines build RenderRequests without torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

CAMERAS = ("image", "frontal")


@dataclass(frozen=True, kw_only=True)
class RenderRequest:
    """One mesh to render. vertices [N, 3] float32, triangles [M, 3] int32 (0-based),
    uvs [N, 2] float32 in 0..1 with v up (OBJ convention: v=0 is the texture's bottom
    row), texture uint8 [Th, Tw, 3] RGB. `height`/`width` size the canvas of the "image"
    camera; `img_size` is the square canvas of the "frontal" one."""

    vertices: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray
    camera: Literal["image", "frontal"] = "frontal"
    height: int | None = None
    width: int | None = None
    img_size: int = 512
    margin: float = 0.95
    bg_white: bool = False
    alpha_thresh: float | None = 0.5

    def __post_init__(self) -> None:
        # Normalise dtypes once so both backends see the same arrays.
        for name, dtype in (
            ("vertices", np.float32),
            ("triangles", np.int32),
            ("uvs", np.float32),
            ("texture", np.uint8),
        ):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        n = len(self.vertices)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be [N, 3], got {self.vertices.shape}")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError(f"triangles must be [M, 3], got {self.triangles.shape}")
        if self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= n):
            raise ValueError("triangle indices out of range")
        if self.uvs.shape != (n, 2):
            raise ValueError(f"uvs must be [{n}, 2], got {self.uvs.shape}")
        if self.texture.ndim != 3 or self.texture.shape[2] != 3 or 0 in self.texture.shape:
            raise ValueError(f"texture must be [Th, Tw, 3] uint8, got {self.texture.shape}")
        if self.camera not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {self.camera!r}")
        if self.camera == "image" and not (self.height and self.width and self.height > 0 and self.width > 0):
            raise ValueError("the image camera needs the canvas height and width")
        if self.img_size < 1 or not self.margin > 0:
            raise ValueError("img_size must be >= 1 and margin > 0")
        if self.alpha_thresh is not None and not 0.0 <= self.alpha_thresh < 1.0:
            raise ValueError("alpha_thresh must be in [0, 1) or None")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the output image."""
        if self.camera == "image":
            return int(self.height), int(self.width)
        return self.img_size, self.img_size


@dataclass(frozen=True)
class Scene:
    """A request reduced to what a rasteriser needs: vertices in the pixels of the
    supersampled canvas (x right, y down, larger z nearer), its size, and the mesh."""

    vertices: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray
    height: int
    width: int


def to_pixels(req: RenderRequest) -> np.ndarray:
    """[N, 3] float32: the request's vertices in output-image pixels (x right, y down,
    larger z nearer) for its camera."""
    v = req.vertices.astype(np.float64)
    if req.camera == "image":
        return v.astype(np.float32)
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    extent = float((hi - lo).max())
    scale = req.margin * req.img_size / extent if extent > 0 else 1.0
    centre = (lo + hi) / 2
    mid = (req.img_size - 1) / 2  # canvas centre in pixel-centre coordinates
    out = np.empty_like(v)
    out[:, 0] = mid + (v[:, 0] - centre[0]) * scale
    out[:, 1] = mid - (v[:, 1] - centre[1]) * scale  # model y up -> image y down
    out[:, 2] = v[:, 2] * scale  # model z towards the viewer: larger is nearer already
    return out.astype(np.float32)


# PyTorch3D counts a sample lying exactly on an edge as outside both triangles that share
# it, so meshes with edges through sample centres (axis-aligned quads, 45-degree
# diagonals) would show cracks. Shifting every vertex by these few thousandths of a sample
# (unequal, so no simple slope keeps its edges on the samples) avoids that in both
# backends alike; a shift of under 1/300 pixel is invisible.
NUDGE = np.array([0.0061, 0.0037])


def to_scene(req: RenderRequest, supersample: int) -> Scene:
    """The request on the supersampled canvas: sample (j) of a pixel row sits at
    x = (j + 0.5) / s - 0.5 of the output, so x' = (x + 0.5) * s - 0.5."""
    s = supersample
    p = to_pixels(req).astype(np.float64)
    p[:, :2] = (p[:, :2] + 0.5) * s - 0.5 + NUDGE
    p[:, 2] *= s
    h, w = req.size
    return Scene(p.astype(np.float32), req.triangles, req.uvs, req.texture, h * s, w * s)


def compose(rgb: np.ndarray, coverage: np.ndarray, req: RenderRequest) -> np.ndarray:
    """uint8 RGBA [H, W, 4] from the mean colour of covered samples (float 0..1) and the
    coverage (0..1): alpha by `alpha_thresh` (or soft), background where alpha is 0."""
    if req.alpha_thresh is None:
        alpha = np.rint(coverage * 255).astype(np.uint8)
    else:
        alpha = np.where(coverage > req.alpha_thresh, 255, 0).astype(np.uint8)
    out = np.empty(coverage.shape + (4,), np.uint8)
    out[..., :3] = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    out[alpha == 0, :3] = 255 if req.bg_white else 0
    out[..., 3] = alpha
    return out
