"""3DDFA_V2's crop rule, for the pipeline to cut TDDFA's 120x120 inputs from detector
boxes: numpy and OpenCV only (the pipeline imports it without torch)."""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE = 120


def roi_box_from_bbox(box) -> np.ndarray:
    """3DDFA_V2's crop square from a detector box [x1, y1, x2, y2]: side 1.58x the
    mean of width and height (truncated to whole pixels), centre moved down by 0.14 of
    that mean (detector boxes sit high on the face). Float64 [4]; may leave the image."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    mean_side = (x2 - x1 + y2 - y1) / 2
    cx = (x1 + x2) / 2
    cy = (y1 + y2) / 2 + mean_side * 0.14
    side = int(mean_side * 1.58)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float64)


def crop_120(image: np.ndarray, roi_box, size: int = INPUT_SIZE) -> np.ndarray:
    """The ROI (rounded to whole pixels) cut from an HxWx3 image, zeros where it leaves
    the image, resized to size x size (bilinear), as 3DDFA_V2 crops."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in roi_box[:4])
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty ROI box {list(roi_box)}")
    h, w = image.shape[:2]
    canvas = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_LINEAR)


def crops_for_boxes(image: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [K,120,120,3] crops, float64 [K,4] ROI boxes) for detector boxes [K,4]:
    one TDDFA item and the boxes to map its points back with."""
    rois = np.array([roi_box_from_bbox(b) for b in boxes], np.float64).reshape(-1, 4)
    crops = (
        np.stack([crop_120(image, r) for r in rois])
        if len(rois)
        else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    )
    return crops, rois
