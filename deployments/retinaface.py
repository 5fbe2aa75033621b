"""RetinaFace: insightface's detector runner (RetinaFace/SCRFD exports with 5 keypoints)
over a local ONNX file.

Item: an image, uint8 RGB HxWx3 of any size. Result: list[FaceLandmarks], 5-point
scheme (eyes, nose tip, mouth corners), boxes and points in that image's pixels, best
score first, after NMS.

The exported detectors take one image per forward pass (batch axis fixed to 1, outputs
without a batch axis), so a batch is one forward per image inside one predict() call:
batching here saves calls, not compute. Measured (bench/bench_face_extract.py, 2-core
CPU): 8 images per predict() cost the same per image as one; forcing a symbolic batch
axis into the graph changes scores (by up to 0.21: the graph is not batch-safe) and is
no faster per image, so we do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deployments.geometry import letterbox_size
from deployments.onnx_session import providers, session_options
from deployments.types import FIVE_POINT, FaceLandmarks, Placement

NUM_LANDMARKS = 5


DET_SIZE = 640  # the default letterbox side; pipelines pre-shrink images to it


@dataclass(frozen=True, kw_only=True)
class RetinaFaceConfig:
    model_path: str
    det_size: int = DET_SIZE  # square letterbox side (multiple of 32)
    det_thresh: float = 0.5
    nms_thresh: float = 0.4


class RetinaFace:
    def __init__(self, cfg: RetinaFaceConfig, placement: Placement = Placement()):
        from insightface.model_zoo import get_model

        if cfg.det_size % 32:
            raise ValueError(f"det_size must be a multiple of 32, got {cfg.det_size}")
        self.cfg = cfg
        self.runner = get_model(cfg.model_path, providers=providers(placement),
                                sess_options=session_options(placement))
        if self.runner is None or getattr(self.runner, "taskname", "") != "detection":
            raise ValueError(f"{cfg.model_path} is not a RetinaFace/SCRFD detector export")
        if not self.runner.use_kps:
            raise ValueError(f"{cfg.model_path} has no keypoint outputs; alignment needs 5 landmarks")
        # ctx_id 0: keep the providers chosen above (a negative id would rebuild the
        # session for CPU only).
        self.runner.prepare(0, input_size=(cfg.det_size, cfg.det_size),
                            det_thresh=cfg.det_thresh, nms_thresh=cfg.nms_thresh)

    def predict(self, images: list[np.ndarray]) -> list[list[FaceLandmarks]]:
        results = []
        for image in images:
            canvas, scale = self._preprocess(image)
            results.append(self._postprocess(*self._forward(canvas), scale))
        return results

    def _preprocess(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Letterbox into the top-left of a det_size square, as insightface does, and
        hand the runner BGR (it swaps to RGB itself when building the blob)."""
        size = self.cfg.det_size
        height, width = image.shape[:2]
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
        return [FaceLandmarks(box=np.ascontiguousarray(row[:4]), score=float(row[4]), points=pts, scheme=FIVE_POINT)
                for row, pts in zip(pre, points)]
