"""Response models shared by the HTTP endpoints (pydantic, so OpenAPI documents them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app import display
from serve_app.pipelines.face_extract import FaceExtractParams


class ErrorResponse(BaseModel):
    error: str = Field(description="stable machine-readable code, e.g. unsupported_format")
    message: str
    request_id: str


class FaceMaskResponse(BaseModel):
    request_id: str
    width: int
    height: int
    boxes: list[list[float]] = Field(description="one [x1, y1, x2, y2] per detected face")
    mask_png_base64: str | None = Field(None, description="binary mask, white = face (if requested)")
    face_rgba_png_base64: str | None = Field(None, description="the image with alpha = mask (if requested)")
    overlay_png_base64: str | None = Field(None, description="mask tinted over the image (if requested)")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class HealthResponse(BaseModel):
    """Every app's health route (/healthz, /health, /ready)."""

    status: str = Field(description="ok | not_ready")
    timestamp: str = Field(default_factory=now_iso, description="UTC, ISO 8601")
    version: str
    models: dict[str, str] = Field(default_factory=dict, description="deployment -> weights in use")
    checks: dict[str, str] = Field(default_factory=dict, description="/ready: deployment -> ok or the problem")


class RootHealthResponse(BaseModel):
    """GET /healthz: the whole graph at a glance."""

    status: str = Field(description="ok | degraded")
    timestamp: str = Field(default_factory=now_iso, description="UTC, ISO 8601")
    version: str
    applications: dict[str, str] = Field(description="application -> Serve status (RUNNING, DEPLOYING, ...)")
    models: dict[str, dict[str, str]] = Field(description="model deployment -> weights, device (and any problem)")


# POST /v1/face-mask-sam2


class FaceMaskSource(BaseModel):
    box: list[float] = Field(description="the face oval's box [x1, y1, x2, y2] (same as boxes[i])")
    prompt_box: list[int] = Field(description="the grown, clipped box sent to SAM2 as its box prompt")
    meshed: bool = Field(
        True,
        description="false: FaceMesh could not place this face (too small, turned away); "
        "its outline is the ellipse in the detector box",
    )
    mask_source: Literal["sam2", "polygon"] = Field(
        description="sam2: the SAM2 service's mask; polygon: the filled FaceMesh face oval"
    )
    fallback_reason: str | None = Field(
        None,
        description="why the polygon was used: not_configured, unreachable, timeout, server_error, "
        "auth_refused, rejected, invalid_response, empty_mask, client_error",
    )

    @staticmethod
    def of(face) -> FaceMaskSource:
        """From the pipeline's FaceSource, rounded for display."""
        return FaceMaskSource(
            box=display.box(face.box),
            prompt_box=face.prompt_box,
            meshed=face.meshed,
            mask_source=face.mask_source,
            fallback_reason=face.fallback_reason,
        )


class FaceMaskSam2Response(FaceMaskResponse):
    faces: list[FaceMaskSource] = Field(default_factory=list, description="one entry per face, in boxes order")


# POST /extract-faces


class ImageInput(BaseModel):
    """One image: exactly one of image_url / image_base64 (checked by the endpoint,
    which answers 400 with the error shape when it is not so)."""

    model_config = ConfigDict(extra="forbid")
    image_url: str | None = Field(
        None, max_length=8192, description="http(s) URL the server fetches (public hosts only)"
    )
    image_base64: str | None = Field(None, description="raw base64 or a data: URI")


class ExtractFacesRequest(FaceExtractParams):
    """The images, plus the pipeline's parameters (serve_app/pipelines/face_extract.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    images: list[ImageInput] = Field(description="at most MAX_IMAGES_PER_REQUEST entries")
    match_people: bool = Field(
        False,
        description="look each unique face up in the people gallery (its `person`); needs Authorization: Bearer <key>",
    )


class PersonMatch(BaseModel):
    """A person of the gallery a face matches (/v1/people/search, /extract-faces match_people)."""

    person_id: str
    name: str | None
    similarity: float = Field(description="cosine similarity of the face to the person's closest enrolled face")


class DuplicateFace(BaseModel):
    face_id: str
    image_index: int
    bbox: list[float]
    confidence: float
    similarity: float = Field(description="cosine similarity to the face it was merged into")


class ExtractedFace(BaseModel):
    face_id: str = Field(description="UUID of this face, unique per response")
    image_index: int = Field(description="index of its image in the request")
    bbox: list[float] = Field(description="[x1, y1, x2, y2] in the image's pixels")
    landmarks: list[list[float]] = Field(description="5 points [x, y]: eyes, nose tip, mouth corners")
    confidence: float = Field(description="detector score")
    embedding: list[float] = Field(description="L2-normalised ArcFace embedding")
    headshot_base64: str = Field(description="data:image/jpeg;base64 URI of the 160x160 aligned face")
    low_quality: bool = Field(
        False,
        description="under the quality floor (quality_min_face_size, quality_min_score):"
        " no identity evidence, so never merged with any face, and no face merged into it",
    )
    duplicate_ids: list[str] = Field(default_factory=list, description="face_ids merged into this face")
    duplicates: list[DuplicateFace] = Field(default_factory=list, description="the merged faces themselves")
    person: PersonMatch | None = Field(
        None,
        description="with match_people: the enrolled person this face matches best at or above "
        "similarity_threshold; null: nobody (always null for a low_quality face, and without match_people)",
    )


class ImageError(BaseModel):
    image_index: int
    error: str = Field(description="stable code, e.g. url_refused, unsupported_format")
    message: str


class ExtractFacesResponse(BaseModel):
    request_id: str
    faces: list[ExtractedFace] = Field(
        description="one per unique person, first occurrence; faces of one image are never merged"
    )
    total_faces_detected: int = Field(description="faces that passed the size filter, before de-duplication")
    unique_faces: int = Field(description="entries in `faces`, low-quality faces included")
    low_quality_faces: int = Field(0, description="entries in `faces` under the quality floor (never merged)")
    similarity_threshold: float = Field(
        description="the threshold used: the request's, else the recogniser's calibrated one"
    )
    images_processed: int = Field(description="images that loaded and went through detection")
    image_errors: list[ImageError] = Field(default_factory=list, description="images that could not be used")
    processing_time_ms: float


# POST /v1/mask-augment


class FaceAugmentationOut(BaseModel):
    augmentation: int = Field(description="which augmentation of the image (0-based)")
    mask_type: str | None = Field(description="the mask painted on this face; null: none (see error)")
    mask_color: str | None = Field(None, description="#rrggbb for plain masks")
    texture: str | None = Field(None, description="category/name for cloth masks")
    error: str | None = Field(None, description="why this face has no mask: no_mesh, mask_failed")
    crops: dict[str, str] = Field(default_factory=dict, description="crop style -> data:image/jpeg;base64 URI")


class MaskAugmentFace(BaseModel):
    face_index: int
    box: list[float] = Field(description="detector box [x1, y1, x2, y2]")
    score: float
    landmarks: list[list[float]] = Field(description="the detector's 5 points [x, y]")
    yaw: float | None = Field(description="head yaw in degrees (> 0: turned towards the image's right); null: no mesh")
    meshed: bool
    augmentations: list[FaceAugmentationOut]


class AugmentedImage(BaseModel):
    augmentation: int
    masked_png_base64: str | None = Field(None, description="the whole image with every face masked (if requested)")


class MaskAugmentResponse(BaseModel):
    request_id: str
    width: int
    height: int
    seed: int = Field(description="the seed used: send it back to get the same bytes")
    faces: list[MaskAugmentFace]
    augmentations: list[AugmentedImage]


# POST /v1/anonymize


class PoseOut(BaseModel):
    yaw: float
    pitch: float
    roll: float


class AnonymizedFaceOut(BaseModel):
    face_index: int
    box: list[float] = Field(description="detector box [x1, y1, x2, y2]")
    score: float
    landmarks: list[list[float]] = Field(description="the 68 landmarks [x, y, z] (iBUG order), image pixels")
    pose: PoseOut = Field(description="degrees; yaw > 0: turned towards the image's right, pitch > 0: chin down")
    render_png_base64: str | None = Field(
        None, description="frontal render of the anonymised face, RGBA (if requested)"
    )
    mesh_zip_base64: str | None = Field(
        None, description="OBJ + MTL + texture PNG of the anonymised face, zipped (only with outputs=mesh)"
    )


class AnonymizeResponse(BaseModel):
    request_id: str
    width: int
    height: int
    morphable_model: str = Field(description="which morphable model built the meshes")
    faces: list[AnonymizedFaceOut]
    anonymized_png_base64: str | None = Field(None, description="the photo with every face anonymised (if requested)")
    segmented_png_base64: str | None = Field(
        None, description="the photo as RGBA, eyes (and mouth) cut out (if requested)"
    )
