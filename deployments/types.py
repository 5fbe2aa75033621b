"""Small result types shared by model modules (no Ray, no serve_app)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Faces found in one image: boxes [N,4] x1,y1,x2,y2 (float32, pixels), scores [N],
    and, for detectors that have them, landmarks [N,K,2]."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(num_landmarks: int | None = None) -> "Detections":
        lm = None if num_landmarks is None else np.zeros((0, num_landmarks, 2), np.float32)
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), lm)


@dataclass(frozen=True)
class ParseRequest:
    """One face ROI for a parser: uint8 RGB HxWx3 and the CelebAMask-HQ label ids whose
    probabilities are summed into the returned face-probability map."""

    roi: np.ndarray
    labels: tuple[int, ...]
