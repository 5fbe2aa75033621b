"""Face mask from RetinaFace + FaceMesh + SAM2: find every face and mesh it (the
shared locate step, serve_app/pipelines/locate.py), turn each face's oval into a SAM2
prompt, and use SAM2's mask, or the filled oval polygon when SAM2 gives nothing
usable. A face the mesh could not place uses the ellipse inscribed in its detector box.

The detector gets a letterboxed copy and the mesh a 256-pixel crop per face; SAM2 gets
the full image, once per request, or crops (see serve_app/clients/sam2.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from pydantic import Field

from deployments.facemesh.landmarks import OVAL_IDS, face_oval
from deployments.types import FaceLandmarks
from serve_app.clients.sam2 import EMPTY_MASK, Sam2Outcome
from serve_app.config.spec import Params, PipelineSpec
from serve_app.faces.prompts import FacePrompt, face_prompt
from serve_app.pipelines.common import Model
from serve_app.pipelines.locate import locate_faces

SAM2, POLYGON = "sam2", "polygon"


class Segmenter(Protocol):
    async def segment(
        self, image: np.ndarray, prompts: list[FacePrompt], multimask: bool = True
    ) -> list[Sam2Outcome]: ...


class FaceMaskSam2Params(Params):
    multimask: bool = Field(True, description="ask SAM2 for several candidate masks and keep the best")
    expand: float = Field(0.15, ge=0.0, le=2.0, description="growth of the SAM2 box prompt around each face oval")
    pos_points: int = Field(16, ge=0, le=64, description="positive SAM2 point prompts inside each face oval")
    max_num_faces: int = Field(20, ge=1, le=100, description="faces masked per image, best detector score first")


SPEC = PipelineSpec("face_mask_sam2", FaceMaskSam2Params, {"detect": "RetinaFace", "mesh": "FaceMesh"})


@dataclass(frozen=True)
class FaceSource:
    box: np.ndarray  # the face oval's box [x1, y1, x2, y2]
    prompt_box: list[int]  # the grown, clipped box sent to SAM2
    meshed: bool  # False: the mesh could not place this face; its outline is the box's ellipse
    mask_source: str  # "sam2" or "polygon"
    fallback_reason: str | None  # why not sam2 (serve_app/clients/sam2.py codes)


@dataclass(frozen=True)
class FaceMaskSam2Result:
    width: int
    height: int
    faces: list[FaceSource]
    mask: np.ndarray  # uint8 HxW, 255 = face


async def face_mask_sam2(
    image: np.ndarray, params: FaceMaskSam2Params, detect: Model, mesh: Model, sam2: Segmenter
) -> FaceMaskSam2Result:
    height, width = image.shape[:2]
    faces = await locate_faces(image, detect, mesh, params.max_num_faces)
    prompts = [face_prompt(face_outline(f), width, height, params.expand, params.pos_points) for f in faces]
    outcomes = await sam2.segment(image, prompts, params.multimask) if prompts else []
    mask, sources = await asyncio.to_thread(merge_face_masks, faces, prompts, outcomes, (height, width))
    return FaceMaskSam2Result(width, height, sources, mask)


def merge_face_masks(faces, prompts, outcomes, shape) -> tuple[np.ndarray, list[FaceSource]]:
    mask = np.zeros(shape, np.uint8)
    sources = []
    for face, prompt, outcome in zip(faces, prompts, outcomes):
        face_mask, source, reason = choose_mask(face, prompt, outcome, shape)
        mask[face_mask] = 255
        sources.append(FaceSource(face.box, list(prompt.box), face.meshed, source, reason))
    return mask, sources


def face_outline(face: FaceLandmarks) -> np.ndarray:
    """[36, 2] outline of a face: the mesh's oval, or the ellipse inscribed in the
    detector box for a face the mesh could not place."""
    if face.meshed:
        return face_oval(face)
    x1, y1, x2, y2 = (float(v) for v in face.box)
    angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, len(OVAL_IDS), endpoint=False)  # from the top, like the oval
    return np.stack(
        [(x1 + x2) / 2 + (x2 - x1) / 2 * np.cos(angles), (y1 + y2) / 2 + (y2 - y1) / 2 * np.sin(angles)], axis=1
    ).astype(np.float32)


def choose_mask(
    face: FaceLandmarks, prompt: FacePrompt, outcome: Sam2Outcome, shape
) -> tuple[np.ndarray, str, str | None]:
    """SAM2's mask kept inside the prompt box (a box prompt can still spill onto the
    body or background); the filled oval when SAM2 has no usable mask."""
    if outcome.mask is not None:
        x1, y1, x2, y2 = prompt.box
        inside = np.zeros(shape, bool)
        inside[y1:y2, x1:x2] = outcome.mask[y1:y2, x1:x2]
        if inside.any():
            return inside, SAM2, None
        outcome = Sam2Outcome(None, EMPTY_MASK, "nothing inside the prompt box")
    return polygon_mask(face_outline(face), shape), POLYGON, outcome.reason


def polygon_mask(oval: np.ndarray, shape) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    # Sub-pixel vertices: cv2.fillPoly's `shift` keeps 4 fractional bits.
    pts = np.round(np.asarray(oval, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)
