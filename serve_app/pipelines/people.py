"""The people gallery's glue: faces found and embedded as /extract-faces finds them
(RetinaFace -> alignment -> ArcFace, serve_app/pipelines/face_extract.py), then
enrolled into or searched in FaceGallery (deployments/face_gallery/).

- Enrolment takes each image's LARGEST face: a photo given for one person may show
  others in the background, and the largest face is the one it is a photo of. A face
  under the quality floor is refused for that image (no identity evidence: the rule
  /extract-faces uses for merging), and so is an image with no face.
- Search lists EVERY face found; a face under the quality floor is listed with no
  matches, never matched to anyone.

The gallery's failures arrive as values (deployments/face_gallery/errors.py) and leave
as the shared error shape: unknown person 404, other recogniser weights 409, the store
down 503 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from deployments.face_gallery import errors as gallery_errors
from deployments.face_gallery.index import Match
from deployments.face_gallery.model import AddFaces, Enrol, Search
from deployments.face_gallery.store import PersonRecord
from serve_app import errors
from serve_app.config.spec import Params, PipelineSpec
from serve_app.pipelines.common import Model
from serve_app.pipelines.face_extract import (
    FaceExtractParams,
    ImageFailure,
    ImageLoader,
    embed_faces,
    meets_quality_floor,
    per_image,
)

STORE_RETRY_AFTER_S = 5


class PeopleParams(Params):
    """How faces are found for enrolment and search (the /extract-faces rules)."""

    min_face_size: float = Field(
        20.0, ge=0.0, le=10000.0, description="faces whose shorter box side is smaller (pixels) are ignored"
    )
    quality_min_face_size: float = Field(
        32.0,
        ge=0.0,
        le=10000.0,
        description="faces whose shorter box side is smaller (pixels) are never enrolled or matched",
    )
    quality_min_score: float = Field(
        0.6, ge=0.0, le=1.0, description="faces whose detector score is lower are never enrolled or matched"
    )

    def face_params(self) -> FaceExtractParams:
        return FaceExtractParams(
            min_face_size=self.min_face_size,
            quality_min_face_size=self.quality_min_face_size,
            quality_min_score=self.quality_min_score,
        )


class SearchParams(PeopleParams):
    top_k: int = Field(1, ge=1, le=10, description="people listed per face, best first")
    similarity_threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="cosine similarity at or above which a face matches a person; "
        "unset: the recogniser's calibrated threshold",
    )


SPEC = PipelineSpec("people", PeopleParams, {"detect": "RetinaFace", "embed": "ArcFace", "gallery": "FaceGallery"})


def gallery_error(exc: gallery_errors.GalleryError) -> errors.ApiError:
    if isinstance(exc, gallery_errors.PersonNotFound):
        return errors.ApiError(404, "person_not_found", exc.message)
    if isinstance(exc, gallery_errors.WeightsMismatch):
        return errors.ApiError(
            409,
            "weights_mismatch",
            f"{exc.message}: embeddings of different recognisers cannot be compared "
            "(facegraph gallery reembed rebuilds the gallery from kept crops)",
        )
    if isinstance(exc, gallery_errors.StoreUnavailable):
        return errors.ApiError(503, "store_unavailable", exc.message, headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
    return errors.ApiError(422, "invalid_parameter", exc.message)


async def call_gallery(gallery: Model, item):
    """One gallery call; its failure raised as the shared error shape."""
    try:
        return gallery_errors.unwrap(await gallery(item))
    except gallery_errors.GalleryError as exc:
        raise gallery_error(exc) from None


@dataclass
class EnrolFaces:
    embeddings: np.ndarray  # [K, D]: one per usable image, in image order
    headshots: list[bytes]  # their 160x160 aligned JPEGs (kept only if the gallery keeps crops)
    image_indexes: list[int]
    failures: list[ImageFailure] = field(default_factory=list)


async def largest_faces(
    loaders: Sequence[ImageLoader], params: PeopleParams, detect: Model, embed: Model, max_concurrent_images: int = 8
) -> EnrolFaces:
    """Each image's largest face, embedded; or why the image gave none."""
    face_params = params.face_params()

    async def largest(index: int, kept, crops):
        if not kept:
            return ImageFailure(index, "no_face", f"no face of at least {params.min_face_size:g} pixels")
        largest = max(range(len(kept)), key=lambda k: _area(kept[k][0]))
        box, _, score = kept[largest]
        if not meets_quality_floor(box, score, face_params):
            return ImageFailure(
                index,
                "low_quality_face",
                f"the largest face is under the quality floor ({params.quality_min_face_size:g} pixels, "
                f"score {params.quality_min_score:g}): not enough to recognise anyone by",
            )
        (face,) = await embed_faces(index, [kept[largest]], [crops[largest]], embed)
        return face

    results = await per_image(loaders, face_params, detect, largest, max_concurrent_images)
    faces = [r for r in results if not isinstance(r, ImageFailure)]
    dim = len(faces[0].embedding) if faces else 0
    return EnrolFaces(
        np.stack([f.embedding for f in faces]) if faces else np.zeros((0, dim), np.float32),
        [f.headshot_jpeg for f in faces],
        [f.image_index for f in faces],
        [r for r in results if isinstance(r, ImageFailure)],
    )


def _area(box) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def no_face_enrolled(failures: list[ImageFailure]) -> errors.ApiError:
    why = "; ".join(f"images[{f.image_index}]: {f.code}: {f.message}" for f in failures)
    return errors.ApiError(422, "no_usable_face", f"no image gave a face to enrol ({why})")


async def enrol_person(
    found: EnrolFaces, gallery: Model, weights: str, name: str | None, metadata: dict, actor: str
) -> PersonRecord:
    if not len(found.embeddings):
        raise no_face_enrolled(found.failures)
    return await call_gallery(
        gallery, Enrol(found.embeddings, weights, name=name, metadata=metadata, crops=found.headshots, actor=actor)
    )


async def add_person_faces(found: EnrolFaces, gallery: Model, weights: str, person_id: str, actor: str) -> PersonRecord:
    if not len(found.embeddings):
        raise no_face_enrolled(found.failures)
    return await call_gallery(
        gallery, AddFaces(person_id, found.embeddings, weights, crops=found.headshots, actor=actor)
    )


@dataclass
class FoundFace:
    image_index: int
    box: np.ndarray
    score: float
    low_quality: bool
    matches: list[Match]


@dataclass
class PeopleSearch:
    faces: list[FoundFace]
    threshold: float
    failures: list[ImageFailure]
    images_processed: int


async def search_people(
    loaders: Sequence[ImageLoader],
    params: SearchParams,
    detect: Model,
    embed: Model,
    gallery: Model,
    weights: str,
    threshold: float,
    max_concurrent_images: int = 8,
) -> PeopleSearch:
    """Every face of every image, each with the people it matches (one gallery call for all)."""
    face_params = params.face_params()

    async def embed_all(index: int, kept, crops):
        return await embed_faces(index, kept, crops, embed)

    results = await per_image(loaders, face_params, detect, embed_all, max_concurrent_images)
    faces = [f for r in results if not isinstance(r, ImageFailure) for f in r]
    failures = [r for r in results if isinstance(r, ImageFailure)]
    eligible = [k for k, f in enumerate(faces) if meets_quality_floor(f.bbox, f.score, face_params)]
    matches: dict[int, list[Match]] = {}
    if eligible:
        probes = np.stack([faces[k].embedding for k in eligible])
        found = await call_gallery(gallery, Search(probes, weights, threshold, params.top_k))
        matches = dict(zip(eligible, found.matches))
    return PeopleSearch(
        [FoundFace(f.image_index, f.bbox, f.score, k not in matches, matches.get(k, [])) for k, f in enumerate(faces)],
        threshold,
        failures,
        len(results) - len(failures),
    )


async def match_faces(
    embeddings: np.ndarray, eligible: np.ndarray, gallery: Model, weights: str, threshold: float
) -> list[Match | None]:
    """/extract-faces' `match_people`: each face's best match, None for nobody (and for
    a face under the quality floor, `eligible` False)."""
    rows = np.flatnonzero(eligible)
    best: list[Match | None] = [None] * len(embeddings)
    if len(rows):
        found = await call_gallery(gallery, Search(np.asarray(embeddings)[rows], weights, threshold, 1))
        for row, matches in zip(rows.tolist(), found.matches):
            best[row] = matches[0] if matches else None
    return best
