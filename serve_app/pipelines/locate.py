"""Find every face, then its landmarks: one step, written once, for every pipeline that
needs dense landmarks (face mask with SAM2, mask augmentation, anonymisation).

RetinaFace finds the faces (boxes, scores, 5 points) on the detector's letterboxed
copy; FaceMesh then meshes a square crop around each face, where even a 20-pixel face
of a group photo is large enough for MediaPipe's short-range detector (its own
detectors miss small faces). Each face comes back in image pixels with the mesh's 478
points, the detector's box, score and 5 points (`five`) and the head pose. A face the
mesh cannot place keeps its box and 5 points, with `meshed=False`.

When the detector finds no face at all, the mesh looks at the whole image itself: a
face that fills a tightly cropped image (an aligned 112x112 headshot) is what
RetinaFace misses and MediaPipe's own detector finds.
"""

from __future__ import annotations

import asyncio
import dataclasses

import cv2
import numpy as np

from deployments.facemesh.landmarks import FaceCrops
from deployments.geometry import fit_longest_side, iou, letterbox_size
from deployments.retinaface.model import DET_SIZE
from deployments.types import MESH_478, FaceLandmarks
from serve_app.pipelines.common import Model

CROP_FACTOR = 2.0  # crop side, in detector-box sides: the face fills about half the crop
CROP_SIZE = 256  # crops are resized to this square (up for small faces, down for large)
MIN_MESH_IOU = 0.3  # the mesh's face must be the detector's face, not a neighbour
MESH_MAX_SIDE = 1920  # the whole-image fallback meshes a copy no larger than this


def detector_input(image: np.ndarray, det_size: int = DET_SIZE) -> tuple[np.ndarray, float]:
    """(image for the detector, its scale relative to the original). Larger images are
    shrunk exactly as the detector's letterbox would (insightface's size rule, bilinear),
    so its own resize becomes a no-op; smaller ones travel as they are, and the detector
    runs them on the smallest square input that holds them (a 1x1 image costs a 32x32
    forward, not a 640x640 one: deployments/retinaface/model.py input_side)."""
    height, width = image.shape[:2]
    if max(height, width) <= det_size:
        return image, 1.0
    new_h, new_w = letterbox_size(height, width, det_size)
    return cv2.resize(image, (max(1, new_w), max(1, new_h))), new_h / height


async def detect_faces(image: np.ndarray, detect: Model, det_size: int = DET_SIZE) -> list[FaceLandmarks]:
    """RetinaFace's faces, best first, in the pixels of `image`."""
    small, scale = await asyncio.to_thread(detector_input, image, det_size)
    return [f.scaled(1 / scale) for f in await detect(small)]


def square_crop(image: np.ndarray, box, factor: float = CROP_FACTOR, size: int = CROP_SIZE):
    """A `size`-pixel square around `box`, `factor` times its longest side, padded with
    black where it leaves the image. -> (crop, (x0, y0, pixels per crop pixel))."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0) * factor
    x0, y0 = cx - side / 2, cy - side / 2
    s = size / side
    warp = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
    crop = cv2.warpAffine(image, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop, (x0, y0, side / size)


def place_mesh(face: FaceLandmarks, meshes: list[FaceLandmarks], origin) -> FaceLandmarks:
    """The detector's face with the crop's mesh that is this face (mapped back to image
    pixels), or unchanged with meshed=False when no mesh is."""
    x0, y0, unit = origin
    best, best_iou = None, MIN_MESH_IOU
    for mesh in meshes:
        points = mesh.points.copy()
        points[:, :2] = points[:, :2] * unit + (x0, y0)
        points[:, 2] *= unit
        box = mesh.box * unit + np.array([x0, y0, x0, y0], np.float32)
        overlap = iou(box, face.box)
        if overlap > best_iou:
            best, best_iou = (points.astype(np.float32), mesh.pose), overlap
    if best is None:
        return dataclasses.replace(face, meshed=False)
    points, pose = best
    return FaceLandmarks(
        box=face.box, score=face.score, points=points, scheme=MESH_478, pose=pose, five=face.points[:, :2], meshed=True
    )


async def locate_faces(
    image: np.ndarray, detect: Model, mesh: Model, max_faces: int = 20, det_size: int = DET_SIZE
) -> list[FaceLandmarks]:
    """Every face (at most `max_faces`, best detector score first) with its mesh."""
    faces = (await detect_faces(image, detect, det_size))[:max_faces]
    if not faces:
        return (await mesh_whole_image(image, mesh))[:max_faces]
    crops = await asyncio.to_thread(lambda: [square_crop(image, f.box) for f in faces])
    # One call for all the faces of the image: a 100-face photo is one item of 100 crops,
    # not 100 requests filling the FaceMesh queue.
    meshes = await mesh(FaceCrops(tuple(crop for crop, _ in crops)))
    return [place_mesh(face, found, origin) for face, (_, origin), found in zip(faces, crops, meshes)]


async def mesh_whole_image(image: np.ndarray, mesh: Model) -> list[FaceLandmarks]:
    """The mesh's own detectors on the image (a copy no larger than MESH_MAX_SIDE),
    faces in full-size pixels."""
    height, width = image.shape[:2]
    h, w = fit_longest_side(height, width, MESH_MAX_SIDE)
    if (h, w) == (height, width):
        return list(await mesh(image))
    small = await asyncio.to_thread(cv2.resize, image, (w, h), interpolation=cv2.INTER_AREA)
    return [f.scaled(width / w) for f in await mesh(small)]
