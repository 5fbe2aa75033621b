"""FaceMesh: MediaPipe Face Mesh (478 refined landmarks) from the mediapipe wheel.

Item: uint8 RGB HxWx3. Result: list[MeshFace], one per face (empty list: no face).

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

NUM_LANDMARKS = 478  # 468 mesh points + 10 iris points (refine_landmarks)
OVAL_START = 10  # forehead top: where the ordered oval begins


@dataclass(frozen=True)
class FaceMeshConfig:
    max_num_faces: int = 5
    min_detection_confidence: float = 0.5
    # Second pass for faces too small for the short-range detector (group photos).
    find_small_faces: bool = True
    # Crop around a full-range detection, as a multiple of the detected box's side.
    small_face_crop: float = 3.0
    num_threads: int = 1  # MediaPipe's solutions API picks its own threads
    device: str = "cpu"  # the Python solutions API runs on CPU only


@dataclass(frozen=True)
class MeshFace:
    """landmarks: float32 [478, 3] = x, y in pixels and relative depth z (MediaPipe's z,
    scaled like x: negative is towards the camera, 0 near the head's centre).
    oval: float32 [36, 2] face-oval polygon in pixels, ordered along the mesh's own
    oval edge chain starting at the forehead. box: [x1, y1, x2, y2] around the oval."""

    landmarks: np.ndarray
    oval: np.ndarray
    box: tuple[float, float, float, float]

    def scaled(self, factor: float) -> "MeshFace":
        """The same face in an image `factor` times larger (x, y and z alike)."""
        return MeshFace(
            (self.landmarks * np.float32(factor)).astype(np.float32),
            (self.oval * np.float32(factor)).astype(np.float32),
            tuple(float(v) * factor for v in self.box),
        )


def oval_order(edges) -> list[int]:
    """Walk the face-oval edge set into one closed chain of landmark ids.

    The chain, not the angle around a centroid, defines the order: on a turned face the
    projected oval folds in ways an angular sort scrambles. Direction follows the
    connection list's own edge out of the start point (it is a directed cycle in
    MediaPipe); ties fall back to the smallest id so the order never depends on set
    iteration order."""
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    if any(len(n) != 2 for n in neighbours.values()):
        raise ValueError("the face-oval edges do not form one simple cycle")
    start = OVAL_START if OVAL_START in neighbours else min(neighbours)
    forward = sorted(b for a, b in edges if a == start)
    order, prev, cur = [start], start, (forward or sorted(neighbours[start]))[0]
    while cur != start:
        order.append(cur)
        prev, cur = cur, min(neighbours[cur] - {prev})
    if len(order) != len(neighbours):
        raise ValueError("the face-oval edges form more than one cycle")
    return order


class FaceMesh:
    def __init__(self, cfg: FaceMeshConfig):
        # Imported here: nothing loads at import time, and only replicas that serve
        # FaceMesh pay for MediaPipe.
        from mediapipe.python.solutions import face_detection, face_mesh

        self.cfg = cfg
        self.oval_ids = np.asarray(oval_order(face_mesh.FACEMESH_FACE_OVAL), np.int64)
        # One graph per replica; ModelServer runs one predict() at a time.
        self.mesh = face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=cfg.max_num_faces, refine_landmarks=True,
            min_detection_confidence=cfg.min_detection_confidence)
        self.detector = None
        if cfg.find_small_faces:
            self.detector = face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=cfg.min_detection_confidence)

    def close(self) -> None:
        self.mesh.close()
        if self.detector is not None:
            self.detector.close()

    def predict(self, images: list[np.ndarray]) -> list[list[MeshFace]]:
        # MediaPipe graphs take one image per call; one predict per batch still lets
        # the replica amortise scheduling across requests.
        return [self._predict_one(self._preprocess(img)) for img in images]

    @staticmethod
    def _preprocess(image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"FaceMesh expects RGB HxWx3, got shape {image.shape}")
        return np.ascontiguousarray(image, dtype=np.uint8)

    def _predict_one(self, image: np.ndarray) -> list[MeshFace]:
        height, width = image.shape[:2]
        faces = [self._postprocess(lm, (0, 0, width, height), (width, height)) for lm in self._forward(image)]
        if self.detector is not None and len(faces) < self.cfg.max_num_faces:
            faces += self._small_faces(image, faces)
        return faces

    def _forward(self, image: np.ndarray) -> list[np.ndarray]:
        """MediaPipe's normalised landmarks, float32 [478, 3] per face."""
        result = self.mesh.process(image)
        return [
            np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32)
            for face in (result.multi_face_landmarks or [])
        ]

    def _small_faces(self, image: np.ndarray, found: list[MeshFace]) -> list[MeshFace]:
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
        extra: list[MeshFace] = []
        for _, box in boxes:
            if len(found) + len(extra) >= self.cfg.max_num_faces:
                break
            if any(_iou(box, f.box) > 0.2 for f in found + extra):
                continue
            crop = _crop_around(box, self.cfg.small_face_crop, width, height)
            x1, y1, x2, y2 = crop
            if x2 - x1 < 8 or y2 - y1 < 8:
                continue
            candidates = [
                self._postprocess(lm, crop, (width, height))
                for lm in self._forward(np.ascontiguousarray(image[y1:y2, x1:x2]))
            ]
            # The crop may show neighbours too: keep only the face that was proposed.
            best = max(candidates, key=lambda f: _iou(box, f.box), default=None)
            if best is not None and _iou(box, best.box) > 0.2:
                extra.append(best)
        return extra

    def _postprocess(self, normalised: np.ndarray, region, size) -> MeshFace:
        """Normalised landmarks of `region` (x1, y1, x2, y2 of the image) -> pixels of
        the whole image, clipped to it (faces cut by the border get points on it)."""
        x1, y1, x2, y2 = region
        width, height = size
        rw, rh = x2 - x1, y2 - y1
        lm = np.empty_like(normalised)
        lm[:, 0] = np.clip(normalised[:, 0] * rw + x1, 0, width)
        lm[:, 1] = np.clip(normalised[:, 1] * rh + y1, 0, height)
        lm[:, 2] = normalised[:, 2] * rw  # MediaPipe scales z like x
        oval = np.ascontiguousarray(lm[self.oval_ids, :2])
        box = (float(oval[:, 0].min()), float(oval[:, 1].min()), float(oval[:, 0].max()), float(oval[:, 1].max()))
        return MeshFace(lm, oval, box)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _crop_around(box, factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square `factor` times the box's longest side, centred on it, clipped."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * factor / 2
    return (int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half))),
            int(min(width, np.ceil(cx + half))), int(min(height, np.ceil(cy + half))))
