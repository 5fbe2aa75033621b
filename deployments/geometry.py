"""Box geometry shared by models and pipelines, in one place. Boxes are [x1, y1, x2, y2]
in pixels; sizes are (height, width)."""

from __future__ import annotations

import numpy as np


def expand_box(box, factor: float) -> tuple[float, float, float, float]:
    """Grow a box by `factor` of its width/height on every side (0.15 -> 30% wider)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dw, dh = (x2 - x1) * factor, (y2 - y1) * factor
    return x1 - dw, y1 - dh, x2 + dw, y2 + dh


def clip_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """Round outward to whole pixels and clip to the image; may return an empty box."""
    x1, y1, x2, y2 = box
    x1 = int(np.clip(np.floor(x1), 0, width))
    y1 = int(np.clip(np.floor(y1), 0, height))
    x2 = int(np.clip(np.ceil(x2), 0, width))
    y2 = int(np.clip(np.ceil(y2), 0, height))
    return x1, y1, max(x1, x2), max(y1, y2)


def shorter_side(box) -> float:
    """A box's shorter side: the size rule every face filter uses (min_face_size, the
    quality floor, the anonymiser's smallest face)."""
    return float(min(box[2] - box[0], box[3] - box[1]))


def box_is_empty(box) -> bool:
    x1, y1, x2, y2 = box
    return x2 <= x1 or y2 <= y1


def square_around(box, factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square `factor` times the box's longest side, centred on it, clipped to the
    image (so it may be cut short at a border)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * factor / 2
    return clip_box((cx - half, cy - half, cx + half, cy + half), width, height)


def iou(a, b) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def fit_longest_side(height: int, width: int, max_size: int) -> tuple[int, int]:
    """(h, w) scaled down (never up) so the longest side is at most max_size."""
    scale = min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox_size(height: int, width: int, det_size: int) -> tuple[int, int]:
    """(h, w) an image is resized to inside a det_size square: insightface's own rule
    (int truncation), so a caller that pre-shrinks an image gets the detector's pixels."""
    if height / width > 1.0:
        return det_size, int(det_size / (height / width))
    return int(det_size * (height / width)), det_size
