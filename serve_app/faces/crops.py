"""Face crops for recogniser training sets, from a face's 5 points and box.

    buffalo            the ArcFace-aligned crop (the 5-point template insightface's
                       buffalo packs and our extraction pipeline use), at any size
    original_cropping  the detector box grown by a margin, made square, resized
    scale_shift        the aligned crop with a random scale and shift, as a detector's
                       jitter would give: a recogniser trained on it tolerates jitter

All crops are uint8 RGB size x size; parts outside the image are black (as insightface's
norm_crop leaves them).
"""

from __future__ import annotations

import cv2
import numpy as np

from deployments.geometry import expand_box
from deployments.types import FaceLandmarks
from serve_app.faces.align import alignment_matrix, warp

CROP_STYLES = ("buffalo", "original_cropping", "scale_shift")
DEFAULT_SIZE = 112
DEFAULT_MARGIN = 0.2  # original_cropping grows the box by this fraction of its size on every side
SCALE_RANGE = (0.9, 1.1)
SHIFT_RANGE = 0.08  # fraction of the crop size, either way, per axis


def buffalo_crop(image: np.ndarray, face: FaceLandmarks, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The size x size crop aligned to the ArcFace template scaled by size / 112; at 112
    it is exactly the extraction pipeline's crop (serve_app.faces.align)."""
    return warp(image, alignment_matrix(face.five_points(), size), size)


def original_crop(
    image: np.ndarray, face: FaceLandmarks, margin: float = DEFAULT_MARGIN, size: int = DEFAULT_SIZE
) -> np.ndarray:
    """The face's box grown by `margin` of its width / height on every side, made square
    around its centre (the longer side), resized to size x size. Not rotated."""
    x1, y1, x2, y2 = expand_box(face.box, margin)
    side = max(x2 - x1, y2 - y1, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    scale = size / side
    if scale < 1.0:  # area averaging when shrinking: bilinear sampling would alias
        return _shrink(image, (cx, cy), side, size)
    # Enlarging: one affine map from the square to the output, black where it leaves the image.
    matrix = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def _shrink(image: np.ndarray, centre, side: float, size: int) -> np.ndarray:
    """The side x side square around `centre` (black beyond the image) resized down to
    size x size with area averaging."""
    height, width = image.shape[:2]
    x0, y0 = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
    n = int(round(side))
    square = np.zeros((n, n) + image.shape[2:], image.dtype)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(width, x0 + n), min(height, y0 + n)
    if sx1 > sx0 and sy1 > sy0:
        square[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def scale_shift_matrix(
    face: FaceLandmarks, scale: float, shift: tuple[float, float], size: int = DEFAULT_SIZE
) -> np.ndarray:
    """2x3 image -> crop transform of the aligned crop zoomed by `scale` about the crop's
    centre (> 1: the face larger) and moved by `shift` (fractions of the crop size, x and y)."""
    base = np.vstack([alignment_matrix(face.five_points(), size), [0.0, 0.0, 1.0]])
    c = size / 2.0
    jitter = np.array(
        [[scale, 0.0, c - scale * c + shift[0] * size], [0.0, scale, c - scale * c + shift[1] * size], [0.0, 0.0, 1.0]]
    )
    return (jitter @ base)[:2]


def scale_shift_crop(
    image: np.ndarray,
    face: FaceLandmarks,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = SCALE_RANGE,
    shift_range: float = SHIFT_RANGE,
    size: int = DEFAULT_SIZE,
) -> tuple[np.ndarray, tuple[float, tuple[float, float]]]:
    """The aligned crop with a scale drawn uniformly from `scale_range` and a shift from
    [-shift_range, shift_range] per axis. -> (crop, (scale, (shift_x, shift_y)))."""
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
    if shift_range < 0:
        raise ValueError(f"shift_range must be >= 0, got {shift_range}")
    scale = float(rng.uniform(lo, hi))
    shift = (float(rng.uniform(-shift_range, shift_range)), float(rng.uniform(-shift_range, shift_range)))
    return warp(image, scale_shift_matrix(face, scale, shift, size), size), (scale, shift)
