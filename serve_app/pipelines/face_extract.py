"""Face extraction: per image, detect -> drop small faces -> align -> embed; then
de-duplicate across all images of the request.

The detector gets the image shrunk to its letterbox size (never the full-resolution
image: fewer bytes between deployments, same pixels the detector would have made);
landmarks come back in that image's pixels and are scaled up, so alignment crops the
original pixels. The recogniser gets the 112x112 aligned crops of an image in one
call; concurrent images and requests share its batches. Images are loaded and detected a few at a time
(`max_concurrent_images`) so a 100-image request never holds 100 decoded images.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

import cv2
import numpy as np

from deployments.retinaface import letterbox_size
from deployments.types import Detections
from serve_app import errors
from serve_app.dedup import Dedup, deduplicate
from serve_app.face_align import aligned_crops
from serve_app.imaging import encode_jpeg

Detect = Callable[[np.ndarray], Awaitable[Detections]]
Embed = Callable[[np.ndarray], Awaitable[np.ndarray]]  # [K,112,112,3] crops -> [K,D] embeddings
ImageLoader = Callable[[], Awaitable[np.ndarray]]  # raises ApiError when the image is unusable

EMBED_SIZE = 112  # the ArcFace template size every recogniser we ship takes
HEADSHOT_SIZE = 160


@dataclass(frozen=True)
class ExtractParams:
    det_size: int = 640  # the detector's letterbox side (RetinaFaceConfig.det_size)
    min_face_size: float = 20.0  # pixels of the original image, shorter box side
    similarity_threshold: float = 0.4
    max_concurrent_images: int = 8
    headshot_quality: int = 90


@dataclass(frozen=True)
class Face:
    face_id: str
    image_index: int
    face_index: int  # order within its image (detector order: best score first)
    bbox: np.ndarray  # [4] x1, y1, x2, y2, original pixels
    landmarks: np.ndarray  # [5, 2]
    score: float
    embedding: np.ndarray  # [D] float32, L2-normalised
    headshot_jpeg: bytes  # 160x160 aligned crop


@dataclass(frozen=True)
class ImageFailure:
    image_index: int
    code: str
    message: str


@dataclass
class Extraction:
    faces: list[Face]  # every face that passed the filters, image order then detector order
    dedup: Dedup  # over `faces`
    failures: list[ImageFailure] = field(default_factory=list)
    images_processed: int = 0


def detector_input(image: np.ndarray, det_size: int) -> tuple[np.ndarray, float]:
    """(image for the detector, its scale relative to the original). Larger images are
    shrunk exactly as the detector's letterbox would (insightface's size rule, bilinear),
    so its own resize becomes a no-op; smaller ones travel as they are."""
    height, width = image.shape[:2]
    if max(height, width) <= det_size:
        return image, 1.0
    new_h, new_w = letterbox_size(height, width, det_size)
    return cv2.resize(image, (max(1, new_w), max(1, new_h))), new_h / height


async def gather_or_cancel(coros) -> list:
    """Like asyncio.gather, but the first failure cancels the rest (no orphaned work)
    and is raised as itself, not wrapped in an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


def _align(image: np.ndarray, landmarks: np.ndarray, quality: int) -> list[tuple[np.ndarray, bytes]]:
    out = []
    for lm in landmarks:
        crop, headshot = aligned_crops(image, lm, (EMBED_SIZE, HEADSHOT_SIZE))
        out.append((crop, encode_jpeg(headshot, quality)))
    return out


async def detect_and_align(image: np.ndarray, params: ExtractParams, detect: Detect):
    """-> (kept detections as (box, landmarks, score), their crops and headshots)."""
    small, scale = await asyncio.to_thread(detector_input, image, params.det_size)
    dets: Detections = await detect(small)
    if len(dets) == 0:
        return [], []
    boxes = dets.boxes / scale
    landmarks = dets.landmarks / scale
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    keep = np.flatnonzero(sides >= params.min_face_size)
    kept = [(boxes[i], landmarks[i], float(dets.scores[i])) for i in keep]
    crops = await asyncio.to_thread(_align, image, landmarks[keep], params.headshot_quality)
    return kept, crops


async def embed_faces(image_index: int, kept, crops, embed: Embed) -> list[Face]:
    if not crops:
        return []
    # One call with the image's faces stacked: one round trip to the recogniser per
    # image, not per face; faces of concurrent images and requests still share batches.
    embeddings = await embed(np.stack([crop for crop, _ in crops]))
    return [
        Face(uuid.uuid4().hex, image_index, i, box.astype(np.float32), lm.astype(np.float32), score,
             np.asarray(emb, np.float32), jpeg)
        for i, ((box, lm, score), (_, jpeg), emb) in enumerate(zip(kept, crops, embeddings))
    ]


async def faces_in_image(image: np.ndarray, image_index: int, params: ExtractParams,
                         detect: Detect, embed: Embed) -> list[Face]:
    kept, crops = await detect_and_align(image, params, detect)
    return await embed_faces(image_index, kept, crops, embed)


async def extract_faces(loaders: Sequence[ImageLoader], params: ExtractParams,
                        detect: Detect, embed: Embed) -> Extraction:
    gate = asyncio.Semaphore(max(1, params.max_concurrent_images))

    async def one(index: int, load: ImageLoader) -> list[Face] | ImageFailure:
        async with gate:  # bounds decoded full-size images held at once
            try:
                image = await load()
            except errors.ApiError as exc:
                return ImageFailure(index, exc.code, exc.message)
            kept, crops = await detect_and_align(image, params, detect)
            del image
        # Embedding happens outside the gate: the next image's detection overlaps it.
        return await embed_faces(index, kept, crops, embed)

    results = await gather_or_cancel(one(i, load) for i, load in enumerate(loaders))
    faces = [f for r in results if not isinstance(r, ImageFailure) for f in r]
    failures = [r for r in results if isinstance(r, ImageFailure)]
    embeddings = np.stack([f.embedding for f in faces]) if faces else np.zeros((0, 1), np.float32)
    dedup = deduplicate(embeddings, params.similarity_threshold)
    return Extraction(faces, dedup, failures, len(results) - len(failures))
