"""Mask augmentation and aligned face crops: find every face and mesh it (the shared
locate step), paint a mask from a MaskTheFace template onto each face, and cut the
crops a recogniser is trained on, `n_augmentations` times per image.

Deterministic: augmentation `a` of a request with seed `s` draws from its own
generator seeded (s, a), faces in detector order, so the same input, seed and
parameters give the same bytes, and one augmentation's choices never depend on
another's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from deployments.types import FaceLandmarks
from serve_app.config.spec import Params, PipelineSpec
from serve_app.faces.crops import CROP_STYLES, buffalo_crop, original_crop, scale_shift_crop
from serve_app.faces.mask_painting import MASK_TYPES, apply_mask, draw_augmentation, load_templates
from serve_app.pipelines.common import Model
from serve_app.pipelines.locate import locate_faces

CropStyle = Literal["buffalo", "original_cropping", "scale_shift", "all", "none"]
MAX_SEED = 2**32 - 1


class MaskAugmentParams(Params):
    mask_types: str = Field(
        "all",
        examples=["all", *MASK_TYPES],
        description="comma-separated mask types to draw from, or all: " + ", ".join(MASK_TYPES),
    )
    n_augmentations: int = Field(1, ge=1, le=16, description="augmented copies of each image")
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="random seed (default: derived from the request "
        "id over HTTP, from the file's path in batch jobs); echoed back",
    )
    crop_style: CropStyle = Field(
        "buffalo",
        description="crops to cut per face: buffalo (ArcFace-aligned), "
        "original_cropping (grown detector box), scale_shift (aligned with random jitter), "
        "all, or none",
    )
    crop_size: int = Field(112, ge=32, le=512, description="side of every crop in pixels (the template scales with it)")
    no_mask: bool = Field(False, description="only cut crops of the original faces (no mask painted)")
    max_num_faces: int = Field(20, ge=1, le=100, description="faces per image, best detector score first")
    scale_min: float = Field(0.9, ge=0.5, le=1.5, description="scale_shift: smallest scale")
    scale_max: float = Field(1.1, ge=0.5, le=1.5, description="scale_shift: largest scale")
    shift_max: float = Field(0.08, ge=0.0, le=0.3, description="scale_shift: largest shift, fraction of the crop")

    @field_validator("mask_types")
    @classmethod
    def _known_types(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names or names == ["all"]:
            return "all"
        unknown = [n for n in names if n not in MASK_TYPES]
        if unknown:
            raise ValueError(f"unknown mask types {unknown}; choose from all, {', '.join(MASK_TYPES)}")
        return ",".join(dict.fromkeys(names))

    @model_validator(mode="after")
    def _scale_order(self) -> MaskAugmentParams:
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must not exceed scale_max ({self.scale_max})")
        return self

    @property
    def types(self) -> tuple[str, ...]:
        return MASK_TYPES if self.mask_types == "all" else tuple(self.mask_types.split(","))

    @property
    def styles(self) -> tuple[str, ...]:
        if self.crop_style == "none":
            return ()
        return CROP_STYLES if self.crop_style == "all" else (self.crop_style,)


SPEC = PipelineSpec("mask_augment", MaskAugmentParams, {"detect": "RetinaFace", "mesh": "FaceMesh"})


@dataclass(frozen=True)
class FaceAugmentation:
    mask_type: str | None  # None: no mask (no_mask, or the face could not be meshed)
    mask_color: str | None
    texture: str | None
    crops: dict[str, np.ndarray]  # style -> uint8 RGB crop_size x crop_size
    error: str | None = None  # why this face has no mask


@dataclass(frozen=True)
class Augmentation:
    image: np.ndarray  # the whole image, every face masked (or the original with no_mask)
    faces: list[FaceAugmentation]  # in `MaskAugmentResult.faces` order


@dataclass(frozen=True)
class MaskAugmentResult:
    width: int
    height: int
    seed: int
    faces: list[FaceLandmarks]
    augmentations: list[Augmentation] = field(default_factory=list)


def seed_from(text: str) -> int:
    """A stable seed from text (a request id, a file path): the same text, the same seed."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def seeded(params: MaskAugmentParams, source: str) -> MaskAugmentParams:
    """These params with `seed` resolved, the one place it is: the client's seed as
    given, else one derived from `source` (a request id: a fresh seed per request)."""
    return params if params.seed is not None else params.model_copy(update={"seed": seed_from(source)})


def dataset_seeded(params: MaskAugmentParams, rel: str) -> MaskAugmentParams:
    """A batch job's params for one image: its seed derived from the job's --seed (if
    any) and the image's path, so a re-run, or the image run alone, gives the same bytes."""
    return params.model_copy(update={"seed": seed_from(rel if params.seed is None else f"{params.seed}:{rel}")})


async def mask_augment(image: np.ndarray, params: MaskAugmentParams, detect: Model, mesh: Model) -> MaskAugmentResult:
    """`params` resolved (`seeded` or `dataset_seeded`): the seed is a value in them."""
    if params.seed is None:
        raise ValueError("unresolved params: call seeded() or dataset_seeded() first")
    seed = params.seed
    faces = await locate_faces(image, detect, mesh, params.max_num_faces)
    height, width = image.shape[:2]
    if not faces:
        return MaskAugmentResult(width, height, seed, faces)
    # Painting and cropping are CPU work on the image: one worker thread, off the loop.
    augmentations = await asyncio.to_thread(augment_all, image, faces, params, seed)
    return MaskAugmentResult(width, height, seed, faces, augmentations)


def augment_all(
    image: np.ndarray, faces: list[FaceLandmarks], params: MaskAugmentParams, seed: int
) -> list[Augmentation]:
    library = None if params.no_mask else load_templates()
    textures = library.texture_names if library is not None else ()
    out = []
    for index in range(params.n_augmentations):
        rng = np.random.default_rng([seed, index])
        canvas, per_face = image, []
        for face in faces:
            choice, error = (None, None, None), None
            if library is not None:
                choice = draw_augmentation(rng, params.types, textures)
                if not face.meshed:
                    choice, error = (None, None, None), "no_mesh: the face was found but could not be meshed"
                else:
                    try:
                        canvas, _, _ = apply_mask(
                            canvas, face, choice[0], color=choice[1], texture=choice[2], rng=rng, library=library
                        )
                    except ValueError as exc:  # a mesh the template cannot be fitted to
                        choice, error = (None, None, None), f"mask_failed: {exc}"
            per_face.append((choice, error))
        faces_out = [
            FaceAugmentation(*choice, crops=cut_crops(canvas, face, params, rng), error=error)
            for face, (choice, error) in zip(faces, per_face)
        ]
        out.append(Augmentation(canvas, faces_out))
    return out


def cut_crops(
    image: np.ndarray, face: FaceLandmarks, params: MaskAugmentParams, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    crops = {}
    for style in params.styles:
        if style == "buffalo":
            crops[style] = buffalo_crop(image, face, params.crop_size)
        elif style == "original_cropping":
            crops[style] = original_crop(image, face, size=params.crop_size)
        else:
            crops[style], _ = scale_shift_crop(
                image, face, rng, (params.scale_min, params.scale_max), params.shift_max, params.crop_size
            )
    return crops
