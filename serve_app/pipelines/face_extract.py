"""Face extraction: per image, detect -> drop small faces -> align -> embed; then
de-duplicate across all images of the request (serve_app/faces/dedup.py): faces of one image
are never merged, and faces under the quality floor are returned but never merged.

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from deployments.geometry import shorter_side
from deployments.retinaface.model import DET_SIZE
from deployments.types import FaceLandmarks
from serve_app import errors
from serve_app.config.spec import Params, PipelineSpec
from serve_app.faces.align import aligned_crops
from serve_app.faces.dedup import Dedup, deduplicate
from serve_app.imaging import encode_jpeg
from serve_app.pipelines.common import Model, gather_or_cancel
from serve_app.pipelines.locate import detect_faces

ImageLoader = Callable[[], Awaitable[np.ndarray]]  # raises ApiError when the image is unusable

EMBED_SIZE = 112  # the ArcFace template size every recogniser we ship takes
HEADSHOT_SIZE = 160
HEADSHOT_QUALITY = 90


class FaceExtractParams(Params):
    # None: the recogniser's own calibrated value (its manifest entry), resolved by the
    # caller that knows which weights are served (the ingress, the batch job).
    similarity_threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="cosine similarity at or above which two faces of different images are "
        "the same person; unset: the recogniser's calibrated threshold",
    )
    min_face_size: float = Field(
        20.0, ge=0.0, le=10000.0, description="faces whose shorter box side is smaller (pixels) are dropped"
    )
    # The quality floor (scripts/calibrate_threshold.py): below it, a face copied into a
    # mirrored photo is not reliably similar to itself, so it is no identity evidence.
    quality_min_face_size: float = Field(
        32.0,
        ge=0.0,
        le=10000.0,
        description="faces whose shorter box side is smaller (pixels) are returned "
        "but never merged with anyone (low_quality)",
    )
    quality_min_score: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="faces whose detector score is lower are returned but never merged with anyone (low_quality)",
    )

    def with_threshold(self, calibrated: Callable[[], float]) -> FaceExtractParams:
        """These params with `similarity_threshold` resolved, the one place it is: the
        caller's value as given, else `calibrated()` (the served recogniser's, asked only
        when needed). Every pipeline step below takes resolved params."""
        if self.similarity_threshold is not None:
            return self
        return self.model_copy(update={"similarity_threshold": calibrated()})


SPEC = PipelineSpec("face_extract", FaceExtractParams, {"detect": "RetinaFace", "embed": "ArcFace"})


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
    threshold: float  # the similarity threshold used (the request's or the recogniser's)
    low_quality: np.ndarray  # [len(faces)] bool: under the quality floor, never merged
    failures: list[ImageFailure] = field(default_factory=list)
    images_processed: int = 0


def meets_quality_floor(box, score: float, params: FaceExtractParams) -> bool:
    """Whether a face counts as identity evidence: large and certain enough to merge.
    Decided on the detector's raw floats: rounding is for output only."""
    return shorter_side(box) >= params.quality_min_face_size and score >= params.quality_min_score


def cluster_faces(embeddings: np.ndarray, groups: np.ndarray, low_quality: np.ndarray, params) -> Dedup:
    """The end of the pipeline, for a request (groups = image index) and for a whole
    dataset (the batch job): faces of one group are never merged, nor faces under the
    quality floor; the threshold is the resolved params' (`with_threshold`)."""
    if params.similarity_threshold is None:
        raise ValueError("unresolved params: call FaceExtractParams.with_threshold first")
    return deduplicate(embeddings, params.similarity_threshold, groups=groups, eligible=~low_quality)


def _align(image: np.ndarray, faces: list[FaceLandmarks]) -> list[tuple[np.ndarray, bytes]]:
    out = []
    for face in faces:
        crop, headshot = aligned_crops(image, face.five_points(), (EMBED_SIZE, HEADSHOT_SIZE))
        out.append((crop, encode_jpeg(headshot, HEADSHOT_QUALITY)))
    return out


async def detect_and_align(image: np.ndarray, params: FaceExtractParams, detect: Model, det_size: int = DET_SIZE):
    """-> (kept faces as (box, landmarks, score), their crops and headshots)."""
    faces = await detect_faces(image, detect, det_size)
    kept = [f for f in faces if shorter_side(f.box) >= params.min_face_size]
    if not kept:
        return [], []
    crops = await asyncio.to_thread(_align, image, kept)
    return [(f.box, f.points, f.score) for f in kept], crops


async def embed_faces(image_index: int, kept, crops, embed: Model) -> list[Face]:
    if not crops:
        return []
    # One call with the image's faces stacked: one round trip to the recogniser per
    # image, not per face; faces of concurrent images and requests still share batches.
    embeddings = await embed(np.stack([crop for crop, _ in crops]))
    return [
        Face(
            uuid.uuid4().hex,
            image_index,
            i,
            box.astype(np.float32),
            lm.astype(np.float32),
            score,
            np.asarray(emb, np.float32),
            jpeg,
        )
        for i, ((box, lm, score), (_, jpeg), emb) in enumerate(zip(kept, crops, embeddings))
    ]


async def faces_in_image(
    image: np.ndarray, image_index: int, params: FaceExtractParams, detect: Model, embed: Model
) -> list[Face]:
    kept, crops = await detect_and_align(image, params, detect)
    return await embed_faces(image_index, kept, crops, embed)


async def per_image(
    loaders: Sequence[ImageLoader],
    params: FaceExtractParams,
    detect: Model,
    then: Callable[[int, list, list], Awaitable[Any]],
    max_concurrent_images: int = 8,
) -> list:
    """Each image loaded (its ApiError becomes its ImageFailure), its faces detected and
    aligned, then `then(index, kept, crops)`: the results in image order. At most
    `max_concurrent_images` decoded full-size images are held at once; `then` (embedding)
    runs outside that gate, so the next image's detection overlaps it."""
    gate = asyncio.Semaphore(max(1, max_concurrent_images))

    async def one(index: int, load: ImageLoader):
        async with gate:
            try:
                image = await load()
            except errors.ApiError as exc:
                return ImageFailure(index, exc.code, exc.message)
            kept, crops = await detect_and_align(image, params, detect)
            del image
        return await then(index, kept, crops)

    return await gather_or_cancel(one(i, load) for i, load in enumerate(loaders))


async def extract_faces(
    loaders: Sequence[ImageLoader],
    params: FaceExtractParams,
    detect: Model,
    embed: Model,
    max_concurrent_images: int = 8,
) -> Extraction:
    """`params` resolved (`with_threshold`). `max_concurrent_images` bounds the decoded
    full-size images held at once."""
    if params.similarity_threshold is None:
        raise ValueError("unresolved params: call FaceExtractParams.with_threshold first")

    async def embed_all(index: int, kept, crops) -> list[Face]:
        return await embed_faces(index, kept, crops, embed)

    results = await per_image(loaders, params, detect, embed_all, max_concurrent_images)
    faces = [f for r in results if not isinstance(r, ImageFailure) for f in r]
    failures = [r for r in results if isinstance(r, ImageFailure)]
    embeddings = np.stack([f.embedding for f in faces]) if faces else np.zeros((0, 1), np.float32)
    low_quality = np.array([not meets_quality_floor(f.bbox, f.score, params) for f in faces], bool)
    dedup = cluster_faces(embeddings, np.array([f.image_index for f in faces], int), low_quality, params)
    return Extraction(faces, dedup, params.similarity_threshold, low_quality, failures, len(results) - len(failures))
