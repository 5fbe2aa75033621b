"""Face mask from FaceMesh + SAM2: mesh each face, turn its oval into a SAM2 prompt,
and use SAM2's mask, or the filled oval polygon when SAM2 gives nothing usable.

The mesh gets the image scaled down to at most MESH_MAX_SIDE (its detectors work at
128-192 px anyway; a 40 MP image would only cost transfer). SAM2 gets the full
image, once per request, or crops (see serve_app/sam2_client.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

import cv2
import numpy as np

from deployments.facemesh import MeshFace
from serve_app.geometry import fit_longest_side
from serve_app.prompts import FacePrompt, face_prompt
from serve_app.sam2_client import EMPTY_MASK, Sam2Outcome

MESH_MAX_SIDE = 1920
SAM2, POLYGON = "sam2", "polygon"

Mesh = Callable[[np.ndarray], Awaitable[list[MeshFace]]]


class Segmenter(Protocol):
    async def segment(self, image: np.ndarray, prompts: list[FacePrompt], multimask: bool = True) -> list[Sam2Outcome]: ...


@dataclass(frozen=True)
class FaceMaskSam2Params:
    multimask: bool = True
    expand: float = 0.15
    pos_points: int = 16


@dataclass(frozen=True)
class FaceSource:
    box: list[float]  # the face oval's box [x1, y1, x2, y2]
    prompt_box: list[int]  # the grown, clipped box sent to SAM2
    mask_source: str  # "sam2" or "polygon"
    fallback_reason: str | None  # why not sam2 (serve_app/sam2_client.py codes)


@dataclass(frozen=True)
class FaceMaskSam2Result:
    width: int
    height: int
    boxes: list[list[float]]
    faces: list[FaceSource]
    mask: np.ndarray  # uint8 HxW, 255 = face


async def face_mask_sam2(image: np.ndarray, params: FaceMaskSam2Params, mesh: Mesh, sam2: Segmenter) -> FaceMaskSam2Result:
    height, width = image.shape[:2]
    faces = await mesh_faces(image, mesh)
    prompts = [face_prompt(f.oval, width, height, params.expand, params.pos_points) for f in faces]
    outcomes = await sam2.segment(image, prompts, params.multimask) if prompts else []
    mask = np.zeros((height, width), np.uint8)
    sources = []
    for face, prompt, outcome in zip(faces, prompts, outcomes):
        face_mask, source, reason = choose_mask(face, prompt, outcome, (height, width))
        mask[face_mask] = 255
        box = [round(float(v), 2) for v in face.box]
        sources.append(FaceSource(box, list(prompt.box), source, reason))
    return FaceMaskSam2Result(width, height, [s.box for s in sources], sources, mask)


async def mesh_faces(image: np.ndarray, mesh: Mesh) -> list[MeshFace]:
    """Mesh a copy no larger than MESH_MAX_SIDE, with results in full-size pixels."""
    height, width = image.shape[:2]
    h, w = fit_longest_side(height, width, MESH_MAX_SIDE)
    if (h, w) == (height, width):
        return list(await mesh(image))
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return [f.scaled(width / w) for f in await mesh(small)]


def choose_mask(face: MeshFace, prompt: FacePrompt, outcome: Sam2Outcome, shape) -> tuple[np.ndarray, str, str | None]:
    """SAM2's mask kept inside the prompt box (a box prompt can still spill onto the
    body or background); the filled oval when SAM2 has no usable mask."""
    if outcome.mask is not None:
        x1, y1, x2, y2 = prompt.box
        inside = np.zeros(shape, bool)
        inside[y1:y2, x1:x2] = outcome.mask[y1:y2, x1:x2]
        if inside.any():
            return inside, SAM2, None
        outcome = Sam2Outcome(None, EMPTY_MASK, "nothing inside the prompt box")
    return polygon_mask(face.oval, shape), POLYGON, outcome.reason


def polygon_mask(oval: np.ndarray, shape) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    # Sub-pixel vertices: cv2.fillPoly's `shift` keeps 4 fractional bits.
    pts = np.round(np.asarray(oval, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)
