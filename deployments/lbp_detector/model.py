"""LBPDetector: nagadomi's LBP cascade for anime/cartoon faces (OpenCV).

Item: an image, uint8 greyscale HxW (what the pipeline ships: a third of the bytes)
or RGB HxWx3. Result: list[FaceLandmarks], box-only (the cascade has no landmarks),
the cascade's level weights as scores, best first.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deployments.base import Model
from deployments.types import FaceLandmarks, Placement


@dataclass(frozen=True, kw_only=True)
class LBPDetectorConfig:
    cascade_path: str
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24


class LBPDetector(Model):
    """describe(): no `runtime` (OpenCV on the CPU, whatever the placement)."""

    def __init__(self, cfg: LBPDetectorConfig, placement: Placement = Placement()):
        super().__init__(cfg, placement)
        # OpenCV cascades run on the CPU only, whatever the placement's device.
        cv2.setNumThreads(placement.threads)
        try:
            self.cascade = cv2.CascadeClassifier(cfg.cascade_path)
        except (cv2.error, SystemError) as exc:  # OpenCV raises on malformed XML
            raise ValueError(f"could not load an OpenCV cascade from {cfg.cascade_path}: {exc}") from None
        if self.cascade.empty():
            raise ValueError(f"could not load an OpenCV cascade from {cfg.cascade_path}")

    def predict(self, images: list[np.ndarray]) -> list[list[FaceLandmarks]]:
        # The cascade has no batched form: one image at a time, but still one call per
        # batch so the Serve replica amortises its scheduling over many requests.
        return [self._postprocess(*self._forward(self._preprocess(img))) for img in images]

    @staticmethod
    def _preprocess(image: np.ndarray) -> np.ndarray:
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return cv2.equalizeHist(np.ascontiguousarray(grey, dtype=np.uint8))

    def _forward(self, grey: np.ndarray):
        c = self.cfg
        rects, _, weights = self.cascade.detectMultiScale3(
            grey,
            scaleFactor=c.scale_factor,
            minNeighbors=c.min_neighbors,
            minSize=(c.min_size, c.min_size),
            outputRejectLevels=True,
        )
        return rects, weights

    @staticmethod
    def _postprocess(rects, weights) -> list[FaceLandmarks]:
        if len(rects) == 0:
            return []
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        scores = np.asarray(weights, np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        return [FaceLandmarks.box_only(boxes[i], scores[i]) for i in order]
