"""FaceMesh's light interface: the 478-mesh's landmark ids, the face oval, the head pose
from the mesh, and the crop item type. Pipelines import this, never MediaPipe."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deployments.types import FaceLandmarks, Pose

NUM_LANDMARKS = 478  # 468 mesh points + 10 iris points (refine_landmarks)


OVAL_START = 10  # forehead top: where the ordered oval begins


# MediaPipe's FACEMESH_FACE_OVAL walked into one chain from the forehead (oval_order);
# written out so the pipelines get the oval without importing MediaPipe. A test checks
# it against MediaPipe's own edge set.
OVAL_IDS = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)


# Points that fix the head's axes: eye outer corners (image left, image right on a
# frontal face), forehead top and chin.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER, FOREHEAD, CHIN = 33, 263, 10, 152


@dataclass(frozen=True)
class FaceCrops:
    """Square uint8 RGB crops, each around one face another detector found (RetinaFace),
    all the faces of one image in one item (one call per image, however many faces; a
    batch is counted in faces). The mesh's own detector sees each face large, so small
    faces in group photos mesh too. Result: one list of faces per crop, in its pixels."""

    images: tuple[np.ndarray, ...]


def face_oval(face: FaceLandmarks) -> np.ndarray:
    """float32 [36, 2] face-oval polygon of a meshed face, ordered along the mesh's own
    oval edge chain starting at the forehead."""
    return np.ascontiguousarray(face.points[list(OVAL_IDS), :2], dtype=np.float32)


def mesh_pose(points: np.ndarray) -> Pose:
    """Head pose from the mesh's own 3D points (x, y in pixels, z scaled like x, away
    from the camera positive): the eye line is the head's x axis, forehead->chin its y
    axis, their cross product points back into the head."""
    x_axis = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]
    y_axis = points[CHIN] - points[FOREHEAD]
    forward = -np.cross(x_axis, y_axis)  # out of the face, towards the camera when frontal
    fx, fy, fz = (forward / max(float(np.linalg.norm(forward)), 1e-9)).tolist()
    yaw = math.degrees(math.atan2(fx, -fz))  # nose towards the image's right: > 0
    pitch = math.degrees(math.atan2(fy, math.hypot(fx, fz)))  # chin down: > 0
    roll = math.degrees(math.atan2(float(x_axis[1]), float(x_axis[0])))  # clockwise: > 0
    return Pose(yaw=yaw, pitch=pitch, roll=roll)


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
