"""Response model of POST /v1/face-mask-sam2: /v1/face-mask's fields plus, per face,
where its mask came from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.schemas import FaceMaskResponse


class FaceMaskSource(BaseModel):
    box: list[float] = Field(description="the face oval's box [x1, y1, x2, y2] (same as boxes[i])")
    prompt_box: list[int] = Field(description="the grown, clipped box sent to SAM2 as its box prompt")
    mask_source: Literal["sam2", "polygon"] = Field(
        description="sam2: the SAM2 service's mask; polygon: the filled FaceMesh face oval")
    fallback_reason: str | None = Field(
        None, description="why the polygon was used: not_configured, unreachable, timeout, server_error, "
                          "auth_refused, rejected, invalid_response, empty_mask, client_error")


class FaceMaskSam2Response(FaceMaskResponse):
    faces: list[FaceMaskSource] = Field(default_factory=list, description="one entry per face, in boxes order")
