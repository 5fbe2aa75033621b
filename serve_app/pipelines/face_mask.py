"""Cartoon face mask: LBP detector -> SegFormer parsing per face ROI -> optional
dense CRF -> one merged binary mask for the whole image.

The detector gets a greyscale copy (all the cascade reads); the parser gets only the
grown ROI around each face, scaled so its longest side is at most `max_size`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from deployments.geometry import box_is_empty, clip_box, expand_box, fit_longest_side
from deployments.types import ParseRequest
from serve_app.config.spec import Params, PipelineSpec
from serve_app.faces.refine import crf_refine
from serve_app.pipelines.common import Model, gather_or_cancel

# CelebAMask-HQ ids: skin, nose, eye_g, l_eye, r_eye, l_brow, r_brow, l_ear, r_ear,
# mouth, u_lip, l_lip. Hair (13) is added on request.
FACE_LABELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
HAIR_LABEL = 13
# The faces of an image go to the parser PARSE_CALL_ROIS to a call (one list item): one
# call per face made a 64-face grid 64 round trips through Serve, whose per-call cost
# outweighed a small parser's work; calls of a batch's size (the parser's
# max_batch_size) still spread one image over both replicas, and requests share batches.
PARSE_CALL_ROIS = 8
# Parser calls one request keeps in flight: one request never fills the parser's queue
# (max_queued_requests) by itself and gets refused 503 overloaded.
PARSE_IN_FLIGHT = 8


class FaceMaskParams(Params):
    include_hair: bool = Field(False, description="add hair to the face label set")
    use_crf: bool = Field(False, description="refine each face ROI with a dense CRF")
    max_size: int = Field(448, ge=32, le=2048, description="longest side of each face ROI fed to the parser")
    expand: float = Field(0.15, ge=0.0, le=2.0, description="ROI growth around each detected box")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="probability cut-off for the binary mask")

    @property
    def labels(self) -> tuple[int, ...]:
        return FACE_LABELS + ((HAIR_LABEL,) if self.include_hair else ())


SPEC = PipelineSpec("face_mask", FaceMaskParams, {"detect": "LBPDetector", "parse": "SegFormerParser"})


@dataclass(frozen=True)
class FaceMaskResult:
    width: int
    height: int
    boxes: np.ndarray  # [N, 4] detector boxes x1, y1, x2, y2, one per face
    mask: np.ndarray  # uint8 HxW, 255 = face


async def face_mask(image: np.ndarray, params: FaceMaskParams, detect: Model, parse: Model) -> FaceMaskResult:
    height, width = image.shape[:2]
    grey = await asyncio.to_thread(cv2.cvtColor, image, cv2.COLOR_RGB2GRAY)
    faces = await detect(grey)
    boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
    rois = await asyncio.to_thread(face_rois, image, boxes, params)
    gate = asyncio.Semaphore(PARSE_IN_FLIGHT)

    async def parse_call(group: list) -> list[np.ndarray]:
        async with gate:
            return await parse([ParseRequest(small, params.labels) for _, small in group])

    groups = [rois[i : i + PARSE_CALL_ROIS] for i in range(0, len(rois), PARSE_CALL_ROIS)]
    probs = [p for maps in await gather_or_cancel(parse_call(g) for g in groups) for p in maps]
    if params.use_crf:
        # The CRF is CPU-heavy pure Python/C++: off the event loop, faces in parallel.
        probs = await gather_or_cancel(asyncio.to_thread(crf_refine, small, p) for (_, small), p in zip(rois, probs))
    mask = await asyncio.to_thread(merge_masks, (height, width), [box for box, _ in rois], probs, params.threshold)
    return FaceMaskResult(width, height, boxes, mask)


def face_rois(image: np.ndarray, boxes: np.ndarray, params: FaceMaskParams):
    """[(clipped grown box, ROI scaled to max_size)] for each non-empty face box."""
    height, width = image.shape[:2]
    rois = []
    for box in boxes:
        x1, y1, x2, y2 = grown = clip_box(expand_box(box, params.expand), width, height)
        if box_is_empty(grown):
            continue
        roi = image[y1:y2, x1:x2]
        h, w = fit_longest_side(y2 - y1, x2 - x1, params.max_size)
        small = roi if (h, w) == roi.shape[:2] else cv2.resize(roi, (w, h), interpolation=cv2.INTER_AREA)
        rois.append((grown, np.ascontiguousarray(small)))
    return rois


def merge_masks(shape: tuple[int, int], boxes, probs, threshold: float) -> np.ndarray:
    """Paste each ROI's probability map back at full resolution (max where faces
    overlap) and threshold to a 0/255 mask."""
    merged = np.zeros(shape, np.float32)
    covered = np.zeros(shape, bool)  # outside every ROI is background at any threshold
    for (x1, y1, x2, y2), prob in zip(boxes, probs):
        full = cv2.resize(prob.astype(np.float32), (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        np.maximum(merged[y1:y2, x1:x2], full, out=merged[y1:y2, x1:x2])
        covered[y1:y2, x1:x2] = True
    mask = np.zeros(shape, np.uint8)
    mask[covered & (merged >= threshold)] = 255
    return mask
