"""RetinaFace: insightface's detector runner (RetinaFace/SCRFD exports with 5 keypoints)
over a local ONNX file.

Item: an image, uint8 RGB HxWx3 of any size. Result: Detections with boxes [N,4]
(x1, y1, x2, y2 in that image's pixels), scores [N] and landmarks [N,5,2] (eyes, nose,
mouth corners), best score first, after NMS.

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

from deployments.onnx_session import providers, session_options
from deployments.types import Detections

NUM_LANDMARKS = 5


@dataclass(frozen=True)
class RetinaFaceConfig:
    model_path: str
    det_size: int = 640  # square letterbox side (multiple of 32)
    det_thresh: float = 0.5
    nms_thresh: float = 0.4
    device: str = "cpu"
    num_threads: int = 1


def letterbox_size(height: int, width: int, det_size: int) -> tuple[int, int]:
    """(h, w) the image is resized to inside the det_size square: insightface's own
    rule (int truncation), so callers that pre-shrink an image get the same pixels."""
    if height / width > 1.0:
        return det_size, int(det_size / (height / width))
    return int(det_size * (height / width)), det_size


class RetinaFace:
    def __init__(self, cfg: RetinaFaceConfig):
        from insightface.model_zoo import get_model

        if cfg.det_size % 32:
            raise ValueError(f"det_size must be a multiple of 32, got {cfg.det_size}")
        self.cfg = cfg
        self.runner = get_model(cfg.model_path, providers=providers(cfg.device),
                                sess_options=session_options(cfg.num_threads))
        if self.runner is None or getattr(self.runner, "taskname", "") != "detection":
            raise ValueError(f"{cfg.model_path} is not a RetinaFace/SCRFD detector export")
        if not self.runner.use_kps:
            raise ValueError(f"{cfg.model_path} has no keypoint outputs; alignment needs 5 landmarks")
        # ctx_id 0: keep the providers chosen above (a negative id would rebuild the
        # session for CPU only).
        self.runner.prepare(0, input_size=(cfg.det_size, cfg.det_size),
                            det_thresh=cfg.det_thresh, nms_thresh=cfg.nms_thresh)

    def predict(self, images: list[np.ndarray]) -> list[Detections]:
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

    def _postprocess(self, scores_list, boxes_list, kps_list, scale: float) -> Detections:
        if sum(s.size for s in scores_list) == 0:
            return Detections.empty(NUM_LANDMARKS)
        scores = np.vstack(scores_list).ravel()
        boxes = np.vstack(boxes_list) / scale
        kps = np.vstack(kps_list) / scale
        order = np.argsort(-scores, kind="stable")
        pre = np.hstack([boxes, scores[:, None]]).astype(np.float32)[order]
        kps = kps[order]
        keep = self.runner.nms(pre)
        pre, kps = pre[keep], kps[keep]
        return Detections(np.ascontiguousarray(pre[:, :4]), np.ascontiguousarray(pre[:, 4]),
                          kps.reshape(-1, NUM_LANDMARKS, 2).astype(np.float32))
