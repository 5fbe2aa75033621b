"""Small types shared by model modules and the pipelines (no Ray, no serve_app).

`FaceLandmarks` is the one per-face type: every detector and landmark model returns
it, and every pipeline and the crop/mask code take it. `Placement` is where a model
runs, handed to its constructor by whoever builds it (the serving adapter from Ray's
assignment, a test or a benchmark explicitly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

# Point schemes, by what the points are. Indices follow each model's own convention.
BOX_ONLY = "box"  # a detector without landmarks (LBP cascade): no points
FIVE_POINT = "5-point"  # left eye, right eye, nose tip, left and right mouth corner
IBUG_68 = "68-point"  # the iBUG 300-W layout (3DDFA)
MESH_478 = "478-mesh"  # MediaPipe FaceMesh with refined irises
SCHEMES = (BOX_ONLY, FIVE_POINT, IBUG_68, MESH_478)
POINTS_PER_SCHEME = {BOX_ONLY: 0, FIVE_POINT: 5, IBUG_68: 68, MESH_478: 478}


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a model runs: "cpu" or "cuda", and the CPU threads it may use."""

    device: str = "cpu"
    threads: int = 1


@dataclass(frozen=True, kw_only=True)
class Pose:
    """Head rotation in degrees: yaw > 0 turns the face towards the image's right,
    pitch > 0 tilts the chin down, roll > 0 tilts the head clockwise in the image."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, kw_only=True)
class FaceLandmarks:
    """One face: box [4] x1, y1, x2, y2 and points [K, 2] (x, y) or [K, 3] (x, y, z)
    in the pixels of the image it was found in; `scheme` says what the points are.

    `five` keeps the detector's 5 points when a denser scheme replaced them (a face
    that was meshed after it was detected); `meshed` is False when a landmark model
    was asked and could not place its points, so the face kept its detector points."""

    box: np.ndarray
    score: float
    points: np.ndarray
    scheme: str
    pose: Pose | None = None
    five: np.ndarray | None = None
    meshed: bool = True

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown landmark scheme {self.scheme!r}")
        want = POINTS_PER_SCHEME[self.scheme]
        if len(self.points) != want:
            raise ValueError(f"{self.scheme} needs {want} points, got {len(self.points)}")

    @staticmethod
    def box_only(box, score: float) -> FaceLandmarks:
        return FaceLandmarks(
            box=np.asarray(box, np.float32), score=float(score), points=np.zeros((0, 2), np.float32), scheme=BOX_ONLY
        )

    def scaled(self, factor: float) -> FaceLandmarks:
        """The same face in an image `factor` times larger (z scales like x and y)."""
        f = np.float32(factor)
        return dataclasses.replace(
            self,
            box=(self.box * f).astype(np.float32),
            points=(self.points * f).astype(np.float32),
            five=None if self.five is None else (self.five * f).astype(np.float32),
        )

    def five_points(self) -> np.ndarray:
        """[5, 2] eye centres, nose tip and mouth corners, whatever the scheme (for
        5-point alignment): the detector's own points when kept, else derived."""
        if self.five is not None:
            return self.five
        if self.scheme == FIVE_POINT:
            return self.points[:, :2]
        if self.scheme == IBUG_68:
            p = self.points[:, :2]
            return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)
        if self.scheme == MESH_478:
            # Iris centres (468, 473), nose tip (1), mouth corners (61, 291); the
            # subject's right eye is the image's left, as in the 5-point scheme.
            return self.points[[468, 473, 1, 61, 291], :2].astype(np.float32)
        raise ValueError("a box-only face has no points to align with")


@dataclass(frozen=True)
class ParseRequest:
    """One face ROI for a parser: uint8 RGB HxWx3 and the CelebAMask-HQ label ids whose
    probabilities are summed into the returned face-probability map."""

    roi: np.ndarray
    labels: tuple[int, ...]
