"""FaceMesh: MediaPipe Face Mesh (478 refined landmarks) from the mediapipe wheel.

Item: uint8 RGB HxWx3, or `FaceCrops` (crops each centred on one face another detector
found: the mesh only, no second detector pass; one list of faces per crop). Result: list[FaceLandmarks], one per
face (empty list: no face),
in the 478-mesh scheme: points [478, 3] = x, y in pixels and MediaPipe's relative depth
z (scaled like x; negative is towards the camera), box around the face oval, head pose
from the mesh. MediaPipe gives no per-face score: score is 1.0.

Static image mode always: no tracking state carries from one image to the next, so a
batch gives the same results as one image at a time. MediaPipe's own face detector
is the short-range model (faces that fill much of the frame); with `find_small_faces`
its full-range detector (also bundled) proposes the faces the first pass missed, and
the mesh runs again on a crop around each of them. The first pass is exactly
MediaPipe's own call, so its faces always come first and unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deployments.base import Model
from deployments.facemesh.landmarks import OVAL_IDS, FaceCrops, mesh_pose
from deployments.geometry import iou, square_around
from deployments.types import MESH_478, FaceLandmarks, Placement


@dataclass(frozen=True, kw_only=True)
class FaceMeshConfig:
    max_num_faces: int = 5
    min_detection_confidence: float = 0.5
    # Second pass for faces too small for the short-range detector (group photos).
    find_small_faces: bool = True
    # Crop around a full-range detection, as a multiple of the detected box's side.
    small_face_crop: float = 3.0


class FaceMesh(Model):
    """describe(): no `runtime` (MediaPipe picks its own, on the CPU)."""

    def __init__(self, cfg: FaceMeshConfig, placement: Placement = Placement()):
        # MediaPipe's Python solutions run on the CPU with threads of their own choosing:
        # the placement has nothing to set here.
        # Imported here: nothing loads at import time, and only replicas that serve
        # FaceMesh pay for MediaPipe.
        from mediapipe.python.solutions import face_detection, face_mesh

        super().__init__(cfg, placement)
        # One graph per replica; ModelServer runs one predict() at a time.
        self.mesh = face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=cfg.max_num_faces,
            refine_landmarks=True,
            min_detection_confidence=cfg.min_detection_confidence,
        )
        self.detector = None
        if cfg.find_small_faces:
            self.detector = face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=cfg.min_detection_confidence
            )

    def close(self) -> None:
        self.mesh.close()
        if self.detector is not None:
            self.detector.close()

    @staticmethod
    def item_size(item) -> int:
        return len(item.images) if isinstance(item, FaceCrops) else 1

    def predict(self, images: list) -> list:
        # MediaPipe graphs take one image per call; one predict per batch still lets
        # the replica amortise scheduling across requests.
        return [
            [self._mesh_crop(self._preprocess(crop)) for crop in item.images]
            if isinstance(item, FaceCrops)
            else self._predict_one(self._preprocess(item))
            for item in images
        ]

    @staticmethod
    def _preprocess(image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"FaceMesh expects RGB HxWx3, got shape {image.shape}")
        return np.ascontiguousarray(image, dtype=np.uint8)

    def _predict_one(self, image: np.ndarray) -> list[FaceLandmarks]:
        height, width = image.shape[:2]
        faces = [self._postprocess(lm, (0, 0, width, height), (width, height)) for lm in self._forward(image)]
        if self.detector is not None and len(faces) < self.cfg.max_num_faces:
            faces += self._small_faces(image, faces)
        return faces

    def _mesh_crop(self, crop: np.ndarray) -> list[FaceLandmarks]:
        height, width = crop.shape[:2]
        return [self._postprocess(lm, (0, 0, width, height), (width, height)) for lm in self._forward(crop)]

    def _forward(self, image: np.ndarray) -> list[np.ndarray]:
        """MediaPipe's normalised landmarks, float32 [478, 3] per face."""
        result = self.mesh.process(image)
        return [
            np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32)
            for face in (result.multi_face_landmarks or [])
        ]

    def _small_faces(self, image: np.ndarray, found: list[FaceLandmarks]) -> list[FaceLandmarks]:
        """Faces the full-range detector sees and the first pass missed, meshed on a
        crop where they are big enough for the mesh's own detector."""
        height, width = image.shape[:2]
        detections = self.detector.process(image).detections or []
        boxes = []
        for det in detections:
            rel = det.location_data.relative_bounding_box
            x1, y1 = rel.xmin * width, rel.ymin * height
            boxes.append((float(det.score[0]), (x1, y1, x1 + rel.width * width, y1 + rel.height * height)))
        boxes.sort(key=lambda sb: -sb[0])  # best first; sort is stable for ties
        extra: list[FaceLandmarks] = []
        for _, box in boxes:
            if len(found) + len(extra) >= self.cfg.max_num_faces:
                break
            if any(iou(box, f.box) > 0.2 for f in found + extra):
                continue
            crop = square_around(box, self.cfg.small_face_crop, width, height)
            x1, y1, x2, y2 = crop
            if x2 - x1 < 8 or y2 - y1 < 8:
                continue
            candidates = [
                self._postprocess(lm, crop, (width, height))
                for lm in self._forward(np.ascontiguousarray(image[y1:y2, x1:x2]))
            ]
            # The crop may show neighbours too: keep only the face that was proposed.
            best = max(candidates, key=lambda f: iou(box, f.box), default=None)
            if best is not None and iou(box, best.box) > 0.2:
                extra.append(best)
        return extra

    def _postprocess(self, normalised: np.ndarray, region, size) -> FaceLandmarks:
        """Normalised landmarks of `region` (x1, y1, x2, y2 of the image) -> pixels of
        the whole image, clipped to it (faces cut by the border get points on it)."""
        x1, y1, x2, y2 = region
        width, height = size
        rw, rh = x2 - x1, y2 - y1
        lm = np.empty_like(normalised)
        lm[:, 0] = np.clip(normalised[:, 0] * rw + x1, 0, width)
        lm[:, 1] = np.clip(normalised[:, 1] * rh + y1, 0, height)
        lm[:, 2] = normalised[:, 2] * rw  # MediaPipe scales z like x
        oval = lm[list(OVAL_IDS), :2]
        box = np.array([oval[:, 0].min(), oval[:, 1].min(), oval[:, 0].max(), oval[:, 1].max()], np.float32)
        return FaceLandmarks(box=box, score=1.0, points=lm, scheme=MESH_478, pose=mesh_pose(lm))
