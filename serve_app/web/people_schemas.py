"""Requests and responses of /v1/people (pydantic, so OpenAPI documents them)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.pipelines.people import PeopleParams, SearchParams
from serve_app.web.schemas import ImageError, ImageInput, PersonMatch

MAX_NAME_CHARS = 256
MAX_METADATA_BYTES = 16 * 1024


class EnrolRequest(PeopleParams):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, max_length=MAX_NAME_CHARS, description="how to call this person")
    metadata: dict = Field(default_factory=dict, description=f"any JSON object, at most {MAX_METADATA_BYTES} bytes")
    images: list[ImageInput] = Field(description="each image contributes its largest face")

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict) -> dict:
        if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class AddFacesRequest(PeopleParams):
    model_config = ConfigDict(extra="forbid", frozen=True)
    images: list[ImageInput] = Field(description="each image contributes its largest face")


class SearchRequest(SearchParams):
    model_config = ConfigDict(extra="forbid", frozen=True)
    images: list[ImageInput] = Field(description="every face found in them is searched")


class EnrolResponse(BaseModel):
    request_id: str
    person_id: str
    name: str | None
    faces_enrolled: int = Field(description="faces added by this request (one per usable image)")
    faces: int = Field(description="the person's faces in all")
    image_errors: list[ImageError] = Field(default_factory=list, description="images that gave no face")


class PersonOut(BaseModel):
    person_id: str
    name: str | None
    metadata: dict
    faces: int = Field(description="faces enrolled for this person")
    created_at: str = Field(description="UTC, ISO 8601")


class PersonResponse(PersonOut):
    request_id: str


class PeopleListResponse(BaseModel):
    request_id: str
    people: list[PersonOut] = Field(description="oldest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: this is the last")


class SearchedFace(BaseModel):
    image_index: int
    box: list[float] = Field(description="[x1, y1, x2, y2] in the image's pixels")
    score: float = Field(description="detector score")
    low_quality: bool = Field(description="under the quality floor: listed, never matched")
    matches: list[PersonMatch] = Field(description="people at or above the threshold, best first; empty: nobody")


class SearchResponse(BaseModel):
    request_id: str
    faces: list[SearchedFace] = Field(description="every face found, image order then detector order")
    similarity_threshold: float = Field(description="the request's, else the recogniser's calibrated one")
    images_processed: int
    image_errors: list[ImageError] = Field(default_factory=list)
    processing_time_ms: float
