"""RetinaFace: insightface's detector runner (RetinaFace/SCRFD exports with 5 keypoints)
over a local ONNX file.

Item: an image, uint8 RGB HxWx3 of any size. Result: list[FaceLandmarks], 5-point
scheme (eyes, nose tip, mouth corners), boxes and points in that image's pixels, best
score first, after NMS.

The exported detectors take one image per forward pass (batch axis fixed to 1, outputs
without a batch axis), so a batch is one forward per image inside one predict() call:
batching here saves calls, not compute. Measured (python -m bench face_extract, 2-core
CPU): 8 images per predict() cost the same per image as one; forcing a symbolic batch
axis into the graph changes scores (by up to 0.21: the graph is not batch-safe) and is
no faster per image, so we do not.

Small images are cheap: an image that fits a smaller square than det_size (one of
SMALL_SIDES, at least min_det_size) is letterboxed into that square instead of being
blown up to det_size, so a 1x1 image costs a 32x32 forward, not a 640x640 one (1/400 of
the work). Images that need det_size (every ordinary photo) get exactly insightface's
letterbox, as before. Either way the result is insightface's SCRFD at that input size;
min_det_size=det_size restores insightface's rule for every image. The session is the
export's dynamic one (one session for every size; the detector exports take any side
that is a multiple of 32); the few input sides keep the shapes it meets bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deployments.base import Model
from deployments.geometry import letterbox_size
from deployments.runtime import active_provider, providers, session_options
from deployments.types import FIVE_POINT, FaceLandmarks, Placement

NUM_LANDMARKS = 5


DET_SIZE = 640  # the default letterbox side; pipelines pre-shrink images to it
SMALL_SIDES = (32, 64, 128, 256, 512)  # square inputs below det_size, for images that fit them


@dataclass(frozen=True, kw_only=True)
class RetinaFaceConfig:
    model_path: str
    det_size: int = DET_SIZE  # square letterbox side (multiple of 32)
    det_thresh: float = 0.5
    nms_thresh: float = 0.4
    # The smallest square input: an image fitting one of SMALL_SIDES (>= this) below
    # det_size is letterboxed into the smallest that holds it. det_size: always det_size.
    min_det_size: int = SMALL_SIDES[0]

    def __post_init__(self):  # checked where the config is built (a deploy, a batch job's driver)
        if self.det_size <= 0 or self.det_size % 32:
            raise ValueError(f"det_size must be a positive multiple of 32, got {self.det_size}")
        if not 0 < self.min_det_size <= self.det_size:
            raise ValueError(f"min_det_size must be in 1..det_size ({self.det_size}), got {self.min_det_size}")


def input_side(height: int, width: int, det_size: int = DET_SIZE, min_det_size: int = SMALL_SIDES[0]) -> int:
    """The side of the square the detector runs an image of this size on: the smallest
    of SMALL_SIDES (at least min_det_size) that holds it, else det_size."""
    longest = max(height, width)
    return next((s for s in SMALL_SIDES if min_det_size <= s < det_size and longest <= s), det_size)


class RetinaFace(Model):
    def __init__(self, cfg: RetinaFaceConfig, placement: Placement = Placement()):
        from insightface.model_zoo import get_model

        super().__init__(cfg, placement)
        options = session_options(placement)
        # The exports declare 640-sized outputs; other input sides run fine but ONNX
        # Runtime warns about the shapes on every call. Errors still show.
        options.log_severity_level = 3
        # One dynamic session for every input side (insightface's default builds a
        # fixed-shape copy per side, about 10 MB each; results agree within 3e-7 in score).
        self.runner = get_model(
            cfg.model_path, providers=providers(placement), sess_options=options, static_shape_sessions=False
        )
        if self.runner is None or getattr(self.runner, "taskname", "") != "detection":
            raise ValueError(f"{cfg.model_path} is not a RetinaFace/SCRFD detector export")
        if not self.runner.use_kps:
            raise ValueError(f"{cfg.model_path} has no keypoint outputs; alignment needs 5 landmarks")
        # ctx_id 0: keep the providers chosen above (a negative id would rebuild the
        # session for CPU only).
        self.runner.prepare(
            0, input_size=(cfg.det_size, cfg.det_size), det_thresh=cfg.det_thresh, nms_thresh=cfg.nms_thresh
        )
        # Small inputs need an export whose input sides are free (det_500m's and det_2.5g's
        # are); an export fixed to one size runs every image at det_size, as before.
        dims = self.runner.session.get_inputs()[0].shape[2:4]
        fixed = all(isinstance(d, int) and d > 0 for d in dims)
        self.min_det_size = cfg.det_size if fixed else cfg.min_det_size

    def describe(self) -> dict[str, str | None]:
        # The provider ONNX Runtime kept: the CPU one when the CUDA one could not load.
        return {"runtime": active_provider(self.runner.session)}

    def predict(self, images: list[np.ndarray]) -> list[list[FaceLandmarks]]:
        results = []
        for image in images:
            canvas, scale = self._preprocess(image)
            results.append(self._postprocess(*self._forward(canvas), scale))
        return results

    def _preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Letterbox into the top-left of the image's input square (input_side), as
        insightface does, and hand the runner BGR (it swaps to RGB itself when building
        the blob)."""
        height, width = image.shape[:2]
        size = input_side(height, width, self.cfg.det_size, self.min_det_size)
        new_h, new_w = letterbox_size(height, width, size)
        resized = image if (new_h, new_w) == (height, width) else cv2.resize(image, (new_w, new_h))
        canvas = np.zeros((size, size, 3), np.uint8)
        canvas[:new_h, :new_w] = resized[..., ::-1]
        return canvas, new_h / height

    def _forward(self, canvas_bgr: np.ndarray):
        scores, boxes, kps = self.runner.forward(canvas_bgr, self.cfg.det_thresh)
        return scores, boxes, kps

    def _postprocess(self, scores_list, boxes_list, kps_list, scale: float) -> list[FaceLandmarks]:
        if sum(s.size for s in scores_list) == 0:
            return []
        scores = np.vstack(scores_list).ravel()
        boxes = np.vstack(boxes_list) / scale
        kps = np.vstack(kps_list) / scale
        order = np.argsort(-scores, kind="stable")
        pre = np.hstack([boxes, scores[:, None]]).astype(np.float32)[order]
        kps = kps[order]
        keep = self.runner.nms(pre)
        pre, kps = pre[keep], kps[keep]
        points = kps.reshape(-1, NUM_LANDMARKS, 2).astype(np.float32)
        return [
            FaceLandmarks(box=np.ascontiguousarray(row[:4]), score=float(row[4]), points=pts, scheme=FIVE_POINT)
            for row, pts in zip(pre, points)
        ]
