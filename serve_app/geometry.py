"""Cheap box geometry shared by the pipelines. Boxes are [x1, y1, x2, y2] in pixels."""

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


def box_is_empty(box) -> bool:
    x1, y1, x2, y2 = box
    return x2 <= x1 or y2 <= y1


def fit_longest_side(height: int, width: int, max_size: int) -> tuple[int, int]:
    """(h, w) scaled down (never up) so the longest side is at most max_size."""
    scale = min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))
